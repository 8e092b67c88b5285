"""The mailbox actor's side tasks (``_storage``, ``_ticker``) run only while they have work:
an idle connected user keeps none; mail for an offline user starts both; mail queued while a
store write is in flight is written by the same task before it ends (the wake-up race)."""

from __future__ import annotations

from typing import Any

import trio
from client import Client, register_users

from actorchat.node._user import UserActor


def _actor(node: Any, user: str) -> UserActor:
    actor = node.registry.mailboxes[user]._cell.process.actor
    assert isinstance(actor, UserActor)
    return actor


def _side_tasks(actor: UserActor) -> int:
    return actor._proc.side_task_count()


async def _until(done: Any, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not done():
            await trio.sleep(0.02)


async def test_idle_connected_user_keeps_no_side_task(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        await alice.login("alice")
        await bob.login("bob")
        await _until(lambda: "bob" in node.registry.mailboxes)
        bob_actor = _actor(node, "bob")
        await _until(lambda: _side_tasks(bob_actor) == 0)
        assert not bob_actor.storing and not bob_actor.ticking
        # A delivery needs the ticker (ack timeout) until it is acknowledged, then it ends.
        id = await alice.send_message("bob", "hi")
        await bob.until(lambda: len(bob.deliveries) == 1)
        await alice.until(lambda: alice.accepted == [id])
        await _until(lambda: _side_tasks(bob_actor) == 0 and not bob_actor.ticking)
        assert bob_actor is _actor(node, "bob")  # the same incarnation all along


async def test_offline_mail_starts_the_storage_task_and_it_ends(start_node):
    node = await start_node(user_linger=60.0)
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        ids = [await alice.send_message("bob", f"m{i}") for i in range(5)]
        await alice.until(lambda: sorted(alice.accepted) == sorted(ids))  # stored
        bob_actor = _actor(node, "bob")
        await _until(lambda: not bob_actor.storing)
        assert bob_actor.ticking  # offline: the ticker runs toward the idle stop
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        await bob.until(lambda: len(bob.deliveries) == 5)
        assert [d["id"] for d in bob.deliveries] == ids
        await _until(lambda: _side_tasks(bob_actor) == 0)
        assert not bob_actor.storing and not bob_actor.ticking


async def test_mail_queued_during_a_write_is_written_before_the_task_ends(start_node):
    node = await start_node(user_linger=60.0)
    await register_users(node.port, "alice", "bob")
    writing, release = trio.Event(), trio.Event()
    batches: list[int] = []
    write = node.store.write

    async def slow_write(batch, timeout=None):
        if batch.put_mail:
            batches.append(len(batch.put_mail))
            writing.set()
            await release.wait()
        return await write(batch, timeout)

    node.store.write = slow_write  # type: ignore[method-assign]
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        first = await alice.send_message("bob", "first")
        with trio.fail_after(5):
            await writing.wait()
        bob_actor = _actor(node, "bob")
        assert bob_actor.storing
        second = await alice.send_message("bob", "second")  # queued while the write awaits
        await _until(lambda: len(bob_actor.queue.to_store) == 2)
        assert _side_tasks(bob_actor) >= 1 and bob_actor.storing
        release.set()
        await alice.until(lambda: sorted(alice.accepted) == sorted([first, second]))
        await _until(lambda: not bob_actor.storing)
        assert batches == [1, 1] and not bob_actor.queue.to_store
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        await bob.until(lambda: len(bob.deliveries) == 2)
        assert [d["id"] for d in bob.deliveries] == [first, second]


async def test_the_ticker_of_a_connected_mailbox_sleeps_until_mail_can_be_overdue(start_node):
    """With mail in flight a connected mailbox's ticker used to wake it every second (with
    the default ack timeout, 10 s) only to find nothing overdue: at 5,000 users with a message
    each in flight the naps were a quarter of the node's CPU. It now sleeps until the first
    item can be overdue, and that item is still stored (and accepted) on time."""
    node = await start_node(ack_timeout=2.0)  # the old period: 1 s
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice, Client.connect(
        node.port, auto_ack=False
    ) as bob:
        await alice.login("alice")
        await bob.login("bob")
        await _until(lambda: "bob" in node.registry.mailboxes)
        bob_actor = _actor(node, "bob")
        ticks: list[float] = []
        tick = bob_actor._tick

        async def counted(now: float) -> None:
            ticks.append(trio.current_time())
            await tick(now)

        bob_actor._tick = counted  # type: ignore[method-assign]
        sent = trio.current_time()
        id = await alice.send_message("bob", "hi")
        await bob.until(lambda: len(bob.deliveries) == 1)
        await alice.drain(1.5)
        assert ticks == [] and alice.accepted == []  # not acked, not due: not woken either
        await alice.until(lambda: alice.accepted == [id], timeout=5)  # stored when overdue
        assert ticks and ticks[0] - sent >= 1.9
