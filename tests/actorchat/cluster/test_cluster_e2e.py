"""Cluster nodes in this process on PostgreSQL (one fresh schema per test): session takeover
across nodes, a cut link (mail goes through the store), and the cluster secret (a node
without it is never linked to; forged, replayed or malformed link frames are refused)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from cluster_harness import CLUSTER_SECRET, LEASE, LinkProxy, linked

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from client import Client

from actorchat.cluster import LINK_PATH
from actorchat.cluster._link import Dialing, Frame, MailItem
from actorchat.store import StoreBatch, StoreUnavailable

pytestmark = pytest.mark.postgres


async def alice_and_bob(alice: Client, bob: Client) -> None:
    """Register both users (through alice's node) and log each in on its own connection."""
    await alice.register("alice")
    await alice.register("bob")
    await alice.login("alice")
    await bob.login("bob")


async def test_login_on_another_node_takes_over_and_moves_unacked_mail_in_order(cluster):
    n1, n2 = await cluster("n1"), await cluster("n2")
    await linked(n1, n2)
    async with Client.connect(n1.port) as alice, Client.connect(n2.port, auto_ack=False) as bob:
        await alice_and_bob(alice, bob)
        first = [await alice.send_message("bob", f"a{i}") for i in range(20)]
        await bob.until(lambda: len(bob.deliveries) >= 20)
        assert [d["id"] for d in bob.deliveries] == first
        async with Client.connect(n1.port) as bob2:
            await bob2.login("bob")  # on the other node: it takes the session over
            closed = await bob.wait_closed()
            assert closed.code == 4001 and "taken over" in closed.reason
            later = [await alice.send_message("bob", f"b{i}") for i in range(20)]
            await bob2.until(lambda: len(bob2.delivered_ids()) >= 40)
            # the unacknowledged mail moved with bob, in order, with the same mids
            assert bob2.delivered_ids() == first + later
            assert [d["mid"] for d in bob2.deliveries[:20]] == [d["mid"] for d in bob.deliveries]
            await alice.until(lambda: set(first + later) <= set(alice.accepted))
    assert "bob" in n1.cluster.owned and "bob" not in n2.cluster.owned
    assert not alice.errors


async def test_a_burst_crosses_in_batches_one_mailbox_call_per_frame_in_order(cluster):
    n1, n2 = await cluster("n1"), await cluster("n2")
    await linked(n1, n2)
    async with Client.connect(n1.port) as alice, Client.connect(n2.port) as bob:
        await alice_and_bob(alice, bob)
        sent = [await alice.send_message("bob", f"m{i}") for i in range(300)]
        sent += [await alice.send_message("bob", "again", id=id) for id in sent[:20]]  # repeats
        await bob.until(lambda: len(bob.delivered_ids()) >= 300, timeout=20)
        await alice.until(lambda: set(sent) <= set(alice.accepted), timeout=20)
        await bob.drain(0.3)
    assert bob.delivered_ids() == sent[:300]  # in order, once each
    assert not alice.errors and not bob.errors
    # Items crossed many to a frame, and each frame's mail for bob took one mailbox call.
    frames, items = n1.cluster.status()["links"]["n2"]
    assert n2.metrics["cluster_received"] == 320 and items >= 320
    assert 0 < n2.metrics["cluster_mailbox_calls"] <= frames < 320


async def test_cut_link_mail_arrives_through_the_store_in_order(cluster, nursery):
    port = free_port()
    proxy = LinkProxy(port)
    await nursery.start(proxy.run)
    # n2 is reached through the proxy, n1 directly: only n1 -> n2 is cut below.
    address = f"ws://127.0.0.1:{proxy.port}{LINK_PATH}"
    n2 = await cluster("n2", port=port, cluster_address=address)
    n1 = await cluster("n1")
    await linked(n1, n2)
    async with Client.connect(n1.port) as alice, Client.connect(n2.port) as bob:
        await alice_and_bob(alice, bob)
        before = [await alice.send_message("bob", f"a{i}") for i in range(30)]
        await bob.until(lambda: len(bob.delivered_ids()) >= 30)
        proxy.cut()
        during = [await alice.send_message("bob", f"b{i}") for i in range(30)]
        await alice.until(lambda: set(during) <= set(alice.accepted), timeout=15)
        await bob.until(lambda: len(bob.delivered_ids()) >= 60, timeout=15)
        assert n1.cluster.relay.written >= 1 and n2.cluster.relay.taken >= 1
        proxy.restore()
        await linked(n1, n2)
        after = [await alice.send_message("bob", f"c{i}") for i in range(30)]
        await bob.until(lambda: len(bob.delivered_ids()) >= 90, timeout=15)
        await alice.until(lambda: set(after) <= set(alice.accepted), timeout=15)
    assert bob.delivered_ids() == before + during + after
    assert not alice.errors and not bob.errors
    with trio.fail_after(10):  # the relay empties once everything is in custody
        while n2.cluster.relay.fed or n1.cluster.relay.marked:
            await trio.sleep(0.05)


async def test_a_node_without_the_secret_is_never_linked_nor_routed_to(cluster):
    n1, n2 = await cluster("n1"), await cluster("n2")
    await linked(n1, n2)
    rogue = await cluster("rogue", cluster_secret=b"not the secret at all")
    with trio.fail_after(10):
        while not all("rogue" in n.cluster.status()["untrusted"] for n in (n1, n2)):
            await trio.sleep(0.05)
    # Its membership row has no valid proof: nobody dials it or routes mail to it; and its
    # own view trusts nobody, so it dials no one (a hello it made would be refused: below).
    assert "rogue" not in n1.cluster.members and "rogue" not in n2.cluster.members
    assert "rogue" not in n1.cluster.peers and "rogue" not in n2.cluster.peers
    assert rogue.cluster.status()["untrusted"] == ["n1", "n2"] and not rogue.cluster.peers
    assert n1.cluster.status()["linked"] == ["n2"]


async def _dial(port: int, secret: bytes) -> tuple[Any, Dialing]:
    ws = await trio_websocket.connect_websocket_url(
        _nursery_holder[0], f"ws://127.0.0.1:{port}{LINK_PATH}"
    )
    dialing = Dialing(secret, "n9", 1)
    await ws.send_message(dialing.hello(await ws.get_message()))
    return ws, dialing


_nursery_holder: list[Any] = []


async def test_forged_hello_and_forged_frames_are_refused(cluster, nursery):
    n1 = await cluster("n1")
    _nursery_holder[:] = [nursery]
    async with Client.connect(n1.port) as bob:
        await bob.register("bob")
        await bob.register("eve")
        await bob.login("bob")
        # 1. a hello made without the secret: closed at once, before any frame
        ws, _ = await _dial(n1.port, b"wrong secret, 24 bytes..")
        with pytest.raises(trio_websocket.ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason.code == 1008
        # 2. the right secret, then a frame whose MAC is forged: refused, nothing delivered
        for tamper in ("mac", "replay", "garbage"):
            ws, dialing = await _dial(n1.port, CLUSTER_SECRET.encode())
            dialing.check_answer(await ws.get_message())
            sealer = dialing.sealer()
            item = MailItem("eve", f"forged-{tamper}", "bob", "hi")
            frame = sealer.seal(Frame(mail=[item]))
            if tamper == "mac":
                frame = frame[:8] + bytes([frame[8] ^ 1]) + frame[9:]
                await ws.send_message(frame)
            elif tamper == "replay":
                empty = sealer.seal(Frame())
                await ws.send_message(empty)
                await ws.send_message(empty)  # the same frame again: out of sequence
            else:
                await ws.send_message(frame[:40] + b"\xc1 not msgpack")
            with pytest.raises(trio_websocket.ConnectionClosed) as caught:
                with trio.fail_after(5):
                    while True:
                        await ws.get_message()
            assert caught.value.reason.code == 1008, tamper
        await bob.drain(0.3)
    assert not bob.deliveries
    assert n1.cluster.refused_links == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_node_that_loses_its_lease_fences_itself_and_rejoins_owning_nothing(cluster):
    n1, n2 = await cluster("n1"), await cluster("n2")
    await linked(n1, n2)
    read = n2.store.read
    blocked = trio.Event()

    async def renewals_fail(method: str, *args: Any) -> Any:
        if method == "cluster_renew" and not blocked.is_set():
            raise StoreUnavailable("cut off (test)")
        return await read(method, *args)

    async with Client.connect(n1.port) as alice, Client.connect(n2.port) as bob:
        await alice_and_bob(alice, bob)
        first = [await alice.send_message("bob", f"a{i}") for i in range(20)]
        await bob.until(lambda: len(bob.delivered_ids()) >= 20)
        old = n2.cluster.incarnation
        n2.store.read = renewals_fail  # type: ignore[method-assign]
        closed = await bob.wait_closed(timeout=LEASE * 3)
        assert closed.code == 4004  # fenced: it may no longer own bob
        assert not n2.cluster.owned and "bob" not in n2.registry.mailboxes
        during = [await alice.send_message("bob", f"b{i}") for i in range(20)]
        with trio.fail_after(LEASE * 4):
            # its lease lapses: n1 no longer sees that incarnation (a new one may be back)
            while n1.cluster.members.get("n2") == old:
                await trio.sleep(0.02)
        blocked.set()  # the database answers n2 again: it rejoins as a new incarnation
        await alice.until(lambda: set(first + during) <= set(alice.accepted), timeout=15)
    async with Client.connect(n1.port) as bob2:
        await bob2.login("bob")  # bob's old owner is dead: n1 takes him at once
        await bob2.until(lambda: len(bob2.delivered_ids()) >= 20, timeout=15)
        assert bob2.delivered_ids() == during  # the first 20 were acknowledged before
        await linked(n1, n2, timeout=15)
    assert n2.cluster.incarnation != old and not n2.cluster.owned
    assert "bob" in n1.cluster.owned and "bob" not in n2.registry.mailboxes


async def test_a_renewal_that_hangs_fences_the_node_at_its_deadline(cluster):
    """A renewal that never comes back must not let the node go on serving past its deadline
    (0.75 x lease after the last renewal was sent): by then another node may claim its users."""
    n1, n2 = await cluster("n1"), await cluster("n2")
    await linked(n1, n2)
    read = n2.store.read
    hang = trio.Event()

    async def renewals_hang(method: str, *args: Any) -> Any:
        if method == "cluster_renew" and not hang.is_set():
            await trio.sleep_forever()
        return await read(method, *args)

    async with Client.connect(n2.port) as bob:
        await bob.register("bob")
        await bob.login("bob")
        n2.store.read = renewals_hang  # type: ignore[method-assign]
        hung_at = trio.current_time()
        closed = await bob.wait_closed(timeout=LEASE * 3)
        fenced_after = trio.current_time() - hung_at
        assert closed.code == 4004
        # Fenced by its own deadline, before the database could let the lease lapse.
        assert fenced_after < LEASE, fenced_after
        assert not n2.cluster.owned and "bob" not in n2.registry.mailboxes
        hang.set()


def hold_the_claim(node: Any, user: str) -> tuple[trio.Event, trio.Event]:
    """Make ``node``'s next claim of ``user`` commit, then wait before it answers: returns
    (``claimed``: it committed and waits; ``go_on``: set it to let the answer through)."""
    read = node.store.read
    claimed, go_on = trio.Event(), trio.Event()

    async def claim_then_hold(method: str, *args: Any) -> Any:
        result = await read(method, *args)
        if method == "cluster_claim_many" and user in args[0] and not go_on.is_set():
            claimed.set()  # committed: the node owns the user in the database, its start not over
            await go_on.wait()
        return result

    node.store.read = claim_then_hold
    return claimed, go_on


async def test_a_release_that_meets_a_mailbox_start_waits_for_it_then_moves_the_mailbox(
    cluster, nursery
):
    """n1 claims bob to start his mailbox for alice's send; before that start ends, bob logs
    in on n2, which asks n1 to let go. The release used to overtake the start: n1 handed the
    row over, then its start went on and owned bob again, so alice's later mail was stored on
    n1 and accepted while bob was online on n2 (a split seen under load in
    test_cluster_process.py). Now the release waits for the start and moves its mailbox."""
    n1, n2 = await cluster("n1"), await cluster("n2")
    await linked(n1, n2)

    async def go_on_once_asked() -> None:
        with trio.move_on_after(5):
            while "bob" not in n1.cluster.moving:  # n1 took n2's release request
                await trio.sleep(0.001)
        go_on.set()

    async with Client.connect(n1.port) as alice, Client.connect(n2.port) as bob:
        await alice.register("alice")
        await alice.register("bob")
        await alice.login("alice")
        claimed, go_on = hold_the_claim(n1, "bob")
        sent = [await alice.send_message("bob", "m0")]
        with trio.fail_after(10):
            await claimed.wait()
        nursery.start_soon(go_on_once_asked)
        await bob.login("bob", timeout=15)
        sent += [await alice.send_message("bob", f"m{i}") for i in range(1, 11)]
        await alice.until(lambda: set(sent) <= set(alice.accepted), timeout=15)
        await bob.until(lambda: len(bob.delivered_ids()) >= len(sent), timeout=15)
        assert bob.delivered_ids() == sent
    assert "bob" not in n1.cluster.owned and "bob" not in n1.registry.mailboxes
    assert "bob" in n2.cluster.owned
    assert not alice.errors and not bob.errors


async def test_no_mail_is_written_past_the_lease_deadline_even_before_the_fence(cluster):
    """A starved process can reach a mail write after its lease deadline and before its
    heartbeat runs the fence: that write is refused too (so its mail is not accepted)."""
    n1 = await cluster("n1")
    with trio.fail_after(10):
        await n1.cluster.joined.wait()
    batch = StoreBatch(last_seen=[("nobody", 1.0)])
    await n1.store.write(batch)
    n1.cluster.valid_until = trio.current_time()  # the deadline passes; no checkpoint since
    with pytest.raises(StoreUnavailable, match="lost its cluster lease"):
        await n1.store.write(batch)
    assert not n1.cluster.fenced  # the heartbeat had not run: the write itself refused


async def test_a_mailbox_start_that_a_fence_overtakes_registers_no_mailbox(cluster):
    """A fence while a mailbox starts (its mail loading) stops every mailbox and forgets what
    the node owned; the start must not register its mailbox afterwards, on a node that no
    longer owns the user (its new incarnation would serve it without a claim)."""
    n1 = await cluster("n1")
    read = n1.store.read
    loading, go_on = trio.Event(), trio.Event()

    async def hold_the_load(method: str, *args: Any) -> Any:
        if method == "load_mailbox" and args[0] == "bob" and not go_on.is_set():
            loading.set()
            await go_on.wait()
        return await read(method, *args)

    async with Client.connect(n1.port) as alice:
        await alice.register("bob")
    n1.store.read = hold_the_load  # type: ignore[method-assign]
    outcome: list[Any] = []

    async def start() -> None:  # as incoming link mail or a group copy starts one
        try:
            outcome.append(await n1.registry.mailbox("bob"))
        except StoreUnavailable as e:
            outcome.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        with trio.fail_after(10):
            await loading.wait()
        assert "bob" in n1.cluster.owned
        await n1.cluster.fence("test")
        go_on.set()
    assert isinstance(outcome[0], StoreUnavailable), outcome
    assert "bob" not in n1.registry.mailboxes and "bob" not in n1.cluster.owned


async def test_a_claim_still_out_when_a_release_gives_up_waiting_is_claimed_again(cluster):
    """The same race, with n1's claim held past the release's bound on waiting for the start
    (ack_timeout + 5 s): the release hands bob over without it, and the claim's answer
    ("ours", from before) must not count. n1 claims again, finds bob on n2, and the send is
    refused (`unavailable`: nothing promised); sent again, it reaches bob on n2."""
    n1 = await cluster("n1", ack_timeout=0.5)
    n2 = await cluster("n2", ack_timeout=0.5)
    await linked(n1, n2)
    async with Client.connect(n1.port) as alice, Client.connect(n2.port) as bob:
        await alice.register("alice")
        await alice.register("bob")
        await alice.login("alice")
        claimed, go_on = hold_the_claim(n1, "bob")
        first = await alice.send_message("bob", "m0")
        with trio.fail_after(10):
            await claimed.wait()
        await bob.login("bob", timeout=15)  # n1's release waited 5.5 s, then let go
        assert "bob" in n2.cluster.owned and "bob" not in n1.cluster.owned
        go_on.set()
        error = await alice.expect_error("unavailable")
        assert error["ref"] == first and first not in alice.accepted
        await alice.send_message("bob", "m0", id=first)
        await alice.until(lambda: first in alice.accepted, timeout=15)
        await bob.until(lambda: bob.delivered_ids() == [first], timeout=15)
    assert "bob" not in n1.cluster.owned and "bob" not in n1.registry.mailboxes
