"""Injected crashes while traffic flows (in-process node, trio-websocket clients).

Contract 1 (nothing acknowledged is lost), 2 (no duplicates after dedupe; a redelivery carries
the same mid) and 3 (order) must hold through a crash of the recipient's mailbox actor or of a
connection actor, and the crash must stay local: the supervision tree restarts that one actor
(a mailbox) or nothing (a connection is temporary), never anything else.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio
from client import Client, ConnectionLost, Inbox, new_id, register_users
from node_harness import DIALECTS, restarted

import supervisors as sv

# Every line of the delivery contract, on both stores.
pytestmark = pytest.mark.parametrize("dialect", DIALECTS, indirect=True)


def injected() -> sv.Error:
    return sv.Error(RuntimeError("injected"))


def mids_by_id(deliveries: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    mids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in deliveries:
        mids[(item["from"], item["id"])].add(item["mid"])
    return mids


async def _wait(predicate: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.001)


@pytest.mark.parametrize("offline_first", [False, True], ids=["online", "stored"])
async def test_mailbox_crash_mid_stream_loses_nothing(start_node, offline_first):
    """Kill bob's mailbox actor three times while 1,500 messages flow to him. ``stored``:
    the mail was queued while he was offline with a mailbox bound of 100, so most of it is
    paged in from the store during the stream."""
    node = await start_node(mailbox_bound=100, ack_timeout=0.5)
    await register_users(node.port, "alice", "bob")
    n = 1500
    ids = [new_id() for _ in range(n)]
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        await alice.login("alice")
        if offline_first:
            for i, id in enumerate(ids):
                await alice.send_message("bob", f"m{i}", id=id)
            await alice.until(lambda: len(alice.accepted) >= n, timeout=30)
        await bob.login("bob")
        await _wait(lambda: "bob" in node.registry.mailboxes)
        ref = node.registry.mailboxes["bob"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob.until, lambda: len(bob.delivered_ids()) >= n, 60)
            nursery.start_soon(alice.until, lambda: len(set(alice.accepted)) >= n, 60)
            if not offline_first:
                for i, id in enumerate(ids):
                    await alice.send_message("bob", f"m{i}", id=id)
            for kills, at in enumerate((200, 700, 1200), start=1):
                await _wait(lambda at=at: len(bob.deliveries) >= at)
                ref.kill(injected())
                # one kill per incarnation: wait for the supervisor to restart it
                await _wait(lambda kills=kills: restarted(node) == [("test/users/user", kills)])
        await alice.until(lambda: len({i for _, i in alice.receipts["delivered"]}) >= n, 30)
    assert bob.delivered_ids() == ids  # in order, nothing lost
    assert all(len(m) == 1 for m in mids_by_id(bob.deliveries).values())  # same mid again
    assert set(alice.accepted) == set(ids)
    assert not alice.errors and not bob.errors
    # Only bob's mailbox restarted, once per kill, keeping its ref (and its registration).
    assert restarted(node) == [("test/users/user", 3)]
    assert node.registry.mailboxes["bob"] is ref and ref.is_alive()


async def test_mailbox_crash_during_page_in_loses_nothing(start_node):
    """1,500 messages stored for bob (mailbox bound 100); his mailbox actor is killed exactly
    while it reads the next page from the store, three times. The restarted actor must resume
    paging (it once stayed "paging" forever and the rest of the mail never came)."""
    node = await start_node(mailbox_bound=100)
    await register_users(node.port, "alice", "bob")
    n = 1500
    ids = [new_id() for _ in range(n)]
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        await alice.login("alice")
        for i, id in enumerate(ids):
            await alice.send_message("bob", f"m{i}", id=id)
        await alice.until(lambda: len(alice.accepted) >= n, timeout=30)
        kill_points = [300, 700, 1100]
        read = node.store.read

        async def read_and_crash(method: str, *args: Any) -> Any:
            # Runs in the mailbox's storage task: the kill cancels this very read.
            if method == "fetch_mail" and kill_points and len(bob.deliveries) >= kill_points[0]:
                kill_points.pop(0)
                node.registry.mailboxes["bob"].kill(injected())
            return await read(method, *args)

        node.store.read = read_and_crash  # type: ignore[method-assign]
        await bob.login("bob")
        await bob.until(lambda: len(bob.delivered_ids()) >= n, 30)
        await alice.until(lambda: len({i for _, i in alice.receipts["delivered"]}) >= n, 30)
    assert not kill_points
    assert bob.delivered_ids() == ids
    assert all(len(m) == 1 for m in mids_by_id(bob.deliveries).values())
    assert restarted(node) == [("test/users/user", 3)]


async def test_connection_crash_of_recipient_loses_nothing(start_node):
    node = await start_node(ack_timeout=0.5)
    await register_users(node.port, "alice", "bob")
    n = 1000
    ids = [new_id() for _ in range(n)]
    seen = Inbox()  # everything bob received, over both connections
    async with Client.connect(node.port) as alice:
        await alice.login("alice")

        async def bob_session() -> None:
            async with Client.connect(node.port) as bob:
                await bob.login("bob")
                bob.deliveries = seen.deliveries  # record into one list
                try:
                    await bob.until(lambda: len(seen.delivered_ids()) >= n, 60)
                except ConnectionLost as e:
                    seen.closed = e.closed
                    return
                seen.closed = None

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob_session)
            nursery.start_soon(alice.until, lambda: len(set(alice.accepted)) >= n, 60)
            await _wait(lambda: "bob" in node.registry.connections)
            for i, id in enumerate(ids):
                await alice.send_message("bob", f"m{i}", id=id)
            await _wait(lambda: len(seen.deliveries) >= 300)
            node.registry.connections["bob"].kill(injected())
            await _wait(lambda: seen.closed is not None)
            # killed, it never ran on_stop: its mailbox unregistered it (on the Down)
            await _wait(lambda: "bob" not in node.registry.connections)
            nursery.start_soon(bob_session)  # the client reconnects
        await alice.until(lambda: len({i for _, i in alice.receipts["delivered"]}) >= n, 30)
    assert seen.delivered_ids() == ids
    assert all(len(m) == 1 for m in mids_by_id(seen.deliveries).values())
    assert set(alice.accepted) == set(ids)
    assert not alice.errors
    assert restarted(node) == []  # a connection is temporary: nothing restarts


async def test_connection_crash_of_sender_then_retry_loses_nothing(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob")
    n = 1000
    ids = [new_id() for _ in range(n)]
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        async with Client.connect(node.port) as alice:
            await alice.login("alice")
            for i, id in enumerate(ids):
                await alice.send_message("bob", f"m{i}", id=id)
            with pytest.raises(ConnectionLost):
                await alice.until(lambda: len(alice.accepted) >= 300, 30)
                node.registry.connections["alice"].kill(injected())
                await alice.until(lambda: False, 30)
        accepted_before = set(alice.accepted)
        # A client retries every id it has no "accepted" for, in order, with the same ids.
        async with Client.connect(node.port) as alice:
            await alice.login("alice")
            retry = [id for id in ids if id not in accepted_before]
            for i, id in enumerate(ids):
                if id in retry:
                    await alice.send_message("bob", f"m{i}", id=id)
            await alice.until(lambda: set(alice.accepted) >= set(retry), 30)
        await bob.until(lambda: len(bob.delivered_ids()) >= n, 30)
        await bob.drain(0.2)
    assert bob.delivered_ids() == ids
    assert len(bob.deliveries) == n  # the node dropped every retry it had seen: at most once
    assert restarted(node) == []


async def test_a_killed_connection_closes_its_socket_and_the_user_can_log_in_again(start_node):
    # The reader runs in the gateway's handler task, cancelled through the connection's nursery
    # when its actor exits (``sv.run_beside(scope=...)``): a kill (no on_stop) ends the socket.
    node = await start_node()
    await register_users(node.port, "bob")
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        await _wait(lambda: "bob" in node.registry.connections)
        node.registry.connections["bob"].kill()
        with pytest.raises(ConnectionLost):
            await bob.until(lambda: False, 10)
    await _wait(lambda: "bob" not in node.registry.connections)
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        await _wait(lambda: "bob" in node.registry.connections)
