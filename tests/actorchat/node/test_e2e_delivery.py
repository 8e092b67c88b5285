"""The delivery contract end to end (DESIGN.md: 1 nothing acknowledged lost, 2 no duplicates,
3 order, 4 bounded memory; PROTOCOL.md: Messages): in-process node, trio-websocket clients.

Waits are bounded (``Client.until``, ``trio.fail_after``); nothing asserts on a bare sleep.
Some tests wrap one of the node's store calls (``node.store.read``/``write``) to slow it down
or make it fail at an exact moment; that is the seam for deterministic races.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from client import Client, new_id, register_users
from node_harness import DIALECTS, restarted, stop_node

from actorchat.node import DeliveryQueue, _registry
from actorchat.node._messages import Tick
from actorchat.store import StoreUnavailable

# Every line of the delivery contract, on both stores.
pytestmark = pytest.mark.parametrize("dialect", DIALECTS, indirect=True)


async def test_online_delivery_in_order_with_accepted_and_receipts(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob")
    async with (
        Client.connect(node.port) as alice,
        Client.connect(node.port, auto_ack=True, auto_read=True) as bob,
    ):
        await alice.login("alice")
        await bob.login("bob")
        before = time.time()
        ids = [await alice.send_message("bob", f"hello {i}") for i in range(50)]
        await bob.until(lambda: len(bob.deliveries) >= 50)
        after = time.time()
        # Order (contract 3), and the exact item of PROTOCOL.md.
        assert [d["id"] for d in bob.deliveries] == ids
        assert [d["body"] for d in bob.deliveries] == [f"hello {i}" for i in range(50)]
        assert {d["from"] for d in bob.deliveries} == {"alice"}
        assert {d["to"] for d in bob.deliveries} == {"bob"}
        assert len({d["mid"] for d in bob.deliveries}) == 50
        assert all(before - 1 <= d["ts"] <= after + 1 for d in bob.deliveries)
        assert [d["ts"] for d in bob.deliveries] == sorted(d["ts"] for d in bob.deliveries)
        # accepted (acknowledged by the recipient), then both receipts.
        await alice.until(
            lambda: len(alice.accepted) >= 50
            and len(alice.receipts["delivered"]) >= 50
            and len(alice.receipts["read"]) >= 50
        )
        assert sorted(alice.accepted) == sorted(ids)
        assert alice.receipts["delivered"] == [("bob", i) for i in ids]
        assert alice.receipts["read"] == [("bob", i) for i in ids]
        # Nothing more (no duplicate accepted or receipt), and bob got nothing twice.
        await alice.drain(0.3)
        await bob.drain(0.1)
        assert len(alice.accepted) == 50 and len(bob.deliveries) == 50
        assert not alice.errors and not bob.errors
    assert restarted(node) == []


async def test_offline_recipient_gets_mail_on_login(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        ids = [await alice.send_message("bob", f"m{i}") for i in range(20)]
        # Offline: accepted once durably stored, before bob ever connects.
        await alice.until(lambda: len(alice.accepted) >= 20)
        assert sorted(alice.accepted) == sorted(ids)
        assert not alice.receipts["delivered"]
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            await bob.until(lambda: len(bob.deliveries) >= 20)
            assert [d["id"] for d in bob.deliveries] == ids
            await alice.until(lambda: len(alice.receipts["delivered"]) >= 20)
            assert alice.receipts["delivered"] == [("bob", i) for i in ids]
            await alice.drain(0.2)
            assert len(alice.accepted) == 20  # stored ones are not accepted a second time


async def test_disconnect_before_ack_redelivers_same_mids_in_order(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        async with Client.connect(node.port, auto_ack=False) as bob:
            await bob.login("bob")
            first = [await alice.send_message("bob", f"a{i}") for i in range(10)]
            await bob.until(lambda: len(bob.deliveries) >= 10)
            first_mids = [d["mid"] for d in bob.deliveries]
        # bob is gone without acking: his mail is stored, so alice hears "accepted".
        second = [await alice.send_message("bob", f"b{i}") for i in range(5)]
        await alice.until(lambda: len(alice.accepted) >= 15)
        assert sorted(alice.accepted) == sorted(first + second)
        assert not alice.receipts["delivered"]
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            await bob.until(lambda: len(bob.deliveries) >= 15)
            await bob.drain(0.2)
            items = bob.deliveries
            assert [d["id"] for d in items] == first + second  # no gap, in order, once
            assert [d["mid"] for d in items[:10]] == first_mids  # the same mids again
            await alice.until(lambda: len(alice.receipts["delivered"]) >= 15)


async def test_sender_retry_is_accepted_again_and_delivered_at_most_once(start_node):
    node = await start_node(user_linger=0.2)
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        # Offline recipient: the retry arrives while the first copy is stored.
        stored_id = await alice.send_message("bob", "stored")
        await alice.until(lambda: stored_id in alice.accepted)
        await alice.send_message("bob", "stored (retry)", id=stored_id)
        await alice.until(lambda: alice.accepted.count(stored_id) >= 2)
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            online_id = await alice.send_message("bob", "online")
            await bob.until(lambda: len(bob.delivered_ids()) >= 2)
            await alice.until(lambda: online_id in alice.accepted)
            # Retries after acceptance: accepted again, never delivered again.
            for _ in range(3):
                await alice.send_message("bob", "online (retry)", id=online_id)
                await alice.send_message("bob", "stored (retry)", id=stored_id)
            await alice.until(
                lambda: alice.accepted.count(online_id) >= 4
                and alice.accepted.count(stored_id) >= 5
            )
            await bob.drain(0.3)
            assert [d["id"] for d in bob.deliveries] == [stored_id, online_id]
            assert [d["body"] for d in bob.deliveries] == ["stored", "online"]
        # The mailbox stops when idle (user_linger) and a new one loads the dedupe memory from
        # the store: retries are still recognised.
        with trio.fail_after(10):
            while "bob" in node.registry.mailboxes:
                await trio.sleep(0.05)
        await alice.send_message("bob", "again", id=online_id)
        await alice.until(lambda: alice.accepted.count(online_id) >= 5)
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            await bob.drain(0.5)
            assert bob.deliveries == []


async def test_silent_recipient_does_not_hold_up_acceptance(start_node):
    """A connected recipient that reads but never acks gets one delivery window; everything
    for him (sent or waiting behind the window) is stored and accepted within ack_timeout."""
    node = await start_node(ack_timeout=0.5)
    await register_users(node.port, "alice", "bob")
    n = 600
    async with Client.connect(node.port) as alice, Client.connect(node.port, auto_ack=False) as bob:
        await alice.login("alice")
        await bob.login("bob")
        ids = [await alice.send_message("bob", f"m{i}") for i in range(n)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob.drain, 3.0)
            await alice.until(lambda: len(alice.accepted) >= n, timeout=5)
        assert sorted(alice.accepted) == sorted(ids)
        assert [d["id"] for d in bob.deliveries] == ids[: node.delivery_window]
        assert not alice.receipts["delivered"]
        # Acks open the window again: the rest follows, in order.
        bob.auto_ack = True
        await bob.send(type="ack", mids=[d["mid"] for d in bob.deliveries])
        await bob.until(lambda: len(bob.deliveries) >= n)
        assert [d["id"] for d in bob.deliveries] == ids
        await alice.until(lambda: len(alice.receipts["delivered"]) >= n)


async def test_ack_during_store_write_leaves_no_row_behind(start_node):
    """bob does not ack in time, so his message is being stored; he acks while that write is
    in flight. The row must not outlive the ack: after a restart nothing comes again (it once
    did, with the same mid, and his mailbox never went idle)."""
    node = await start_node(ack_timeout=0.5, user_linger=0.2)
    await register_users(node.port, "alice", "bob")
    writing, release = trio.Event(), trio.Event()
    write = node.store.write

    async def slow_write(batch, timeout=None):
        if batch.put_mail:
            writing.set()
            await release.wait()
        return await write(batch, timeout)

    node.store.write = slow_write  # type: ignore[method-assign]
    async with Client.connect(node.port) as alice, Client.connect(node.port, auto_ack=False) as bob:
        await alice.login("alice")
        await bob.login("bob")
        id = await alice.send_message("bob", "hi")
        await bob.until(lambda: len(bob.deliveries) == 1)
        with trio.fail_after(5):
            await writing.wait()  # ack_timeout passed: the store write has begun
        await bob.send(type="ack", mids=[bob.deliveries[0]["mid"]])
        await alice.until(lambda: alice.receipts["delivered"] == [("bob", id)])
        release.set()
        await alice.drain(0.3)
        assert alice.accepted == [id]
    with trio.fail_after(10):  # with nobody attached the mailbox is idle, and stops
        while "bob" in node.registry.mailboxes:
            await trio.sleep(0.05)
    await stop_node(node)
    node = await start_node()
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        await bob.drain(0.5)
        assert bob.deliveries == []


async def test_login_racing_the_idle_mailbox_stop_still_attaches(start_node):
    """bob's idle mailbox gets its ticker's Tick just before his login's Attach. Handling the
    Tick, it used to stop (idle long enough) and drop the Attach queued behind it: bob was
    online and got nothing, his mail went to a new mailbox that thought him offline."""
    node = await start_node(user_linger=0.0)
    await register_users(node.port, "alice", "bob")
    mailbox = node.registry.mailbox

    async def mailbox_then_ticks(user: str, **kwargs: Any) -> Any:
        ref = await mailbox(user, **kwargs)
        if user == "bob":  # the ticker fires twice (idle, then idle for user_linger) right now
            ref.send_nowait(Tick())
            ref.send_nowait(Tick())
        return ref

    node.registry.mailbox = mailbox_then_ticks  # type: ignore[method-assign]
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        await bob.login("bob")
        node.registry.mailbox = mailbox  # type: ignore[method-assign]
        await alice.login("alice")
        id = await alice.send_message("bob", "are you there?")
        await bob.until(lambda: bob.delivered_ids() == [id], timeout=5)
        await alice.until(lambda: alice.receipts["delivered"] == [("bob", id)])


async def test_login_whose_mailbox_stops_before_its_attach_attaches_to_the_next(start_node):
    """bob's idle mailbox is found by his login, then stops for its linger before the login
    has sent its Attach (the login awaits its welcome in between). The Attach used to be
    queued to the stopping mailbox and dropped with it: bob was online, his mail went to a new
    mailbox that thought him offline, and he got nothing until he logged in again."""
    node = await start_node(user_linger=600.0)
    await register_users(node.port, "alice", "bob")
    mailbox = node.registry.mailbox
    stopped: list[Any] = []

    async def mailbox_then_linger_stop(user: str, **kwargs: Any) -> Any:
        ref = await mailbox(user, **kwargs)
        if user == "bob" and not stopped:
            node.user_linger = 0.0  # its linger is over: the next Tick stops it
            ref.send_nowait(Tick())
            with trio.fail_after(5):
                while node.registry.mailboxes.get("bob") is ref:
                    await trio.sleep(0)
            node.user_linger = 600.0
            stopped.append(ref)
        return ref  # found before it stopped

    node.registry.mailbox = mailbox_then_linger_stop  # type: ignore[method-assign]
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        await bob.login("bob")
        await alice.login("alice")
        id = await alice.send_message("bob", "are you there?")
        await bob.until(lambda: bob.delivered_ids() == [id], timeout=5)
    assert stopped and node.registry.mailboxes.get("bob") is not stopped[0]


async def test_slow_store_sheds_new_mail_not_memory(start_node, monkeypatch):
    """Contract 4 when the store is slower than the senders: mail for an absent recipient
    waits in memory for its write only up to a bound; beyond it new mail is refused with
    `unavailable` (nothing accepted) and the sender sends it again. It used to pile up in
    memory without bound. Everything ends up delivered once."""
    queues: list[DeliveryQueue] = []

    class RecordedQueue(DeliveryQueue):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            queues.append(self)

    monkeypatch.setattr(_registry, "DeliveryQueue", RecordedQueue)
    node = await start_node(mailbox_bound=100)
    await register_users(node.port, "alice", "bob")
    write = node.store.write
    # The store takes no mail at all until the node has refused some: however slowly this
    # machine runs the sender, the backlog reaches its bound (the test used to rely on the
    # sender outrunning a store slowed by sleeps, and passed without shedding under load).
    shed = trio.Event()

    async def slow_write(batch: Any, timeout: Any = None) -> Any:
        if batch.put_mail:
            await shed.wait()
            await trio.sleep(0.3)  # then at most ~3,300 rows a second
        return await write(batch, timeout)

    node.store.write = slow_write  # type: ignore[method-assign]
    n = 8000
    messages = [(new_id(), f"m{i}") for i in range(n)]
    backlog: list[int] = []

    async def watch() -> None:
        while True:
            backlog.append(max((len(q.spilling) for q in queues if q.user == "bob"), default=0))
            if node.metrics["refused_store_backlog"]:
                shed.set()
            await trio.sleep(0.01)

    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            resent = await alice.send_until_accepted("bob", messages, timeout=60)
            nursery.cancel_scope.cancel()
    (limit,) = {q.backlog for q in queues}
    print(f"slow store: peak store backlog {max(backlog)} (limit {limit}), {resent} resent")
    assert resent > 0 and node.metrics["refused_store_backlog"] > 0
    assert max(backlog) <= limit
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        await bob.until(lambda: len(bob.deliveries) >= n, timeout=60)
        await bob.drain(0.2)
    assert sorted(bob.delivered_ids()) == sorted(id for id, _ in messages)
    assert len(bob.deliveries) == n
    assert restarted(node) == []


async def test_login_while_the_store_is_down_opens_no_session(start_node):
    """bob's mailbox must be loaded from the store, which is down: his resume fails with
    `unavailable` and no session opens (it used to send welcome first: a session that never
    delivered anything). Once the store is back, the same connection logs in and gets his mail."""
    node = await start_node(user_linger=0.1)
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        id = await alice.send_message("bob", "while you were out")
        await alice.until(lambda: id in alice.accepted)
    with trio.fail_after(10):
        while "bob" in node.registry.mailboxes:
            await trio.sleep(0.02)
    read, down = node.store.read, True

    async def flaky_read(method: str, *args: Any) -> Any:
        if down and method == "load_mailbox":
            raise StoreUnavailable("injected outage")
        return await read(method, *args)

    node.store.read = flaky_read  # type: ignore[method-assign]
    token = node.signer.issue("bob", time.time())
    async with Client.connect(node.port) as bob:
        await bob.send(type="resume", token=token, id="r1")
        error = await bob.expect_error("unavailable")
        assert error["ref"] == "r1" and not bob.has_frame("welcome")
        await bob.send(type="send", id="s1", to="alice", body="x")
        await bob.expect_error("not_authenticated")
        down = False
        await bob.send(type="resume", token=token)
        await bob.until(lambda: bob.delivered_ids() == [id])
        assert bob.user == "bob"
    assert restarted(node) == []


@pytest.mark.parametrize("where", ["memory", "spilled", "reloaded"])
async def test_thousand_queued_messages_delivered_in_order_on_login(start_node, where):
    """1,000 messages for an offline user arrive in order after login: held in the mailbox
    (``memory``), mostly in the store (``spilled``: mailbox bound 100, paged back in), or all
    in the store after the mailbox stopped (``reloaded``)."""
    options = {"mailbox_bound": 100} if where == "spilled" else {}
    if where == "reloaded":
        options["user_linger"] = 0.2
    node = await start_node(**options)
    await register_users(node.port, "alice", "bob")
    n = 1000
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        ids = [new_id() for _ in range(n)]
        for i, id in enumerate(ids):
            await alice.send_message("bob", f"message {i:04d}", id=id)
        await alice.until(lambda: len(alice.accepted) >= n, timeout=30)
        assert sorted(alice.accepted) == sorted(ids)
        if where == "reloaded":
            with trio.fail_after(10):
                while "bob" in node.registry.mailboxes:
                    await trio.sleep(0.05)
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            started = trio.current_time()
            await bob.until(lambda: len(bob.deliveries) >= n, timeout=30)
            drain = trio.current_time() - started
            await bob.drain(0.2)
            assert [d["id"] for d in bob.deliveries] == ids
            assert [d["body"] for d in bob.deliveries] == [f"message {i:04d}" for i in range(n)]
            await alice.until(lambda: len(alice.receipts["delivered"]) >= n, timeout=30)
            assert alice.receipts["delivered"] == [("bob", i) for i in ids]
    print(f"1,000 queued messages ({where}) drained in {drain:.3f} s")
    assert restarted(node) == []


async def test_session_takeover_closes_first_and_moves_unacked_mail(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        async with Client.connect(node.port, auto_ack=False) as first:
            await first.login("bob")
            ids = [await alice.send_message("bob", f"m{i}") for i in range(5)]
            await first.until(lambda: len(first.deliveries) >= 5)
            mids = [d["mid"] for d in first.deliveries]
            async with Client.connect(node.port) as second:
                await second.login("bob")
                closed = await first.wait_closed()
                assert closed.code == 4001 and "taken over" in closed.reason
                await second.until(lambda: len(second.deliveries) >= 5)
                assert [d["mid"] for d in second.deliveries] == mids
                assert [d["id"] for d in second.deliveries] == ids
                later = await alice.send_message("bob", "after takeover")
                await second.until(lambda: len(second.deliveries) >= 6)
                assert second.deliveries[-1]["id"] == later
                await alice.until(lambda: len(alice.receipts["delivered"]) >= 6)
                assert len(first.deliveries) == 5  # nothing went to the closed connection
    assert restarted(node) == []
