"""The janitor (``_janitor.py``): dedupe rows past the retention are forgotten, in bounded
steps; idle users' actors hibernate; silent connections are closed."""

from __future__ import annotations

import pytest
import trio
from client import Client, register_users
from node_harness import make_settings, stop_node

from actorchat.node import Node, _janitor
from actorchat.node._connection import close_idle
from actorchat.node._janitor import DEDUPE_RETENTION, PRUNE_STEP, Janitor
from actorchat.store import DedupeRow, StoreBatch


async def test_janitor_prunes_old_dedupe_rows_and_keeps_recent_ones(tmp_path) -> None:
    node = Node(make_settings(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        assert node.sup is not None and node.sup.whereis("janitor") is not None
        now = node.wall()
        old = [
            DedupeRow("a", f"o{i}", "b", i, now - DEDUPE_RETENTION - 60)
            for i in range(PRUNE_STEP + 5)
        ]
        new = [DedupeRow("a", f"n{i}", "b", 10**6 + i, now - 60) for i in range(7)]
        await node.store.write(StoreBatch(put_dedupe=old + new))
        assert await Janitor(node).prune_once() == PRUNE_STEP + 5  # more than one step
        recent = await node.store.read("recent_dedupe", "b", 100)
        assert sorted(r.client_id for r in recent) == sorted(r.client_id for r in new)
        await stop_node(node)
        nursery.cancel_scope.cancel()


def _task_names() -> list[str]:
    names: list[str] = []

    def walk(task) -> None:
        names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return names


async def _quiet(node: Node, *users: str) -> None:
    """Until each user's mailbox and connection actors are registered and the mailbox has no
    side task left (its ticker ends once nothing is pending: ``_user.py``)."""
    with trio.fail_after(10):
        while not all(
            user in node.registry.connections
            and user in node.registry.mailboxes
            and node.registry.mailboxes[user]._cell.process.side_scopes is None
            for user in users
        ):
            await trio.sleep(0.02)
        await trio.sleep(0.05)


async def test_idle_users_hibernate_and_their_mail_still_flows(start_node) -> None:
    """The janitor's round puts idle mailbox and connection actors to sleep (no task each);
    a message wakes them, is delivered, acknowledged and accepted as ever, and a sleeping
    connection is still closed when its client leaves."""
    node = await start_node()
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        await alice.login("alice")
        await bob.login("bob")
        await _quiet(node, "alice", "bob")
        janitor = Janitor(node)  # (the node's own janitor may do a round meanwhile)
        await janitor.hibernate_once()
        await trio.sleep(0.05)
        registry = node.registry
        refs = [r[u] for r in (registry.mailboxes, registry.connections) for u in ("alice", "bob")]
        assert all(ref.is_hibernating() for ref in refs)
        assert _task_names().count("user") == 0 and _task_names().count("connection") == 0
        id = await alice.send_message("bob", "hi")
        await bob.until(lambda: len(bob.deliveries) == 1)
        await alice.until(lambda: alice.accepted == [id])  # bob's client acknowledged it
        assert bob.deliveries[0]["body"] == "hi"
        await _quiet(node, "alice", "bob")
        await janitor.hibernate_once()
        assert all(ref.is_hibernating() for ref in refs)  # all idle again
    with trio.fail_after(10):  # the clients left: the sleeping connections stop
        while node.registry.connections or node.connection_actors:
            await trio.sleep(0.02)


async def _log_in(node: Node, client: Client, user: str) -> None:
    """Log ``client`` in as ``user`` and wait until the node has its connection."""
    await client.login(user)
    with trio.fail_after(5):
        while user not in node.registry.connections:
            await trio.sleep(0.01)


async def test_a_login_leaves_both_actors_asleep_without_a_round(
    start_node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a login the mailbox and connection actors hibernate by themselves
    (``Actor.hibernate``) and the ticker the mailbox's start began ends at once, not a period
    later: a burst of logins leaves no task per login behind until the janitor's next round
    (the memory those tasks freed stayed in the RSS). Mail still flows."""
    monkeypatch.setattr(_janitor, "HIBERNATE_EVERY", 3600.0)  # no janitor round meanwhile
    node = await start_node(ack_timeout=60.0)  # the ticker's period: 1 s
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        for client, user in ((alice, "alice"), (bob, "bob")):
            await _log_in(node, client, user)
            registry = node.registry
            mailbox, conn = registry.mailboxes[user], registry.connections[user]
            actor = mailbox._cell.process.actor
            with trio.fail_after(0.6):  # well within the ticker's period
                while actor.ticking or not (mailbox.is_hibernating() and conn.is_hibernating()):
                    await trio.sleep(0.01)
        assert _task_names().count("user") == 0 and _task_names().count("connection") == 0
        id = await alice.send_message("bob", "hi")
        await bob.until(lambda: len(bob.deliveries) == 1)
        await alice.until(lambda: alice.accepted == [id])
        assert bob.deliveries[0]["body"] == "hi"


class _Tasks(trio.abc.Instrument):
    """The names of the tasks spawned (``names``) and of the tasks stepped (``steps``)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.steps: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps.append(task.name)


async def test_a_token_login_and_logout_start_no_task_for_the_connection_actor(
    start_node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token login storm's cycle: connect, resume, welcome, close. The connection actor
    starts asleep (``start_asleep``), the reader writes the welcome itself, and the client's
    close ends the actor in place (its ``on_stop`` has nothing to await): no task of its own.
    The mailbox, asleep, takes the login's ``Attach`` and the logout's ``Detach`` in the
    connection's task (``UserActor.receive_now``): no task of its own either, and no ticker
    waits out its linger (the janitor's linger rounds do). Each used to start two connection
    tasks and a ticker per login, then a mailbox task for the login and one for the logout."""
    monkeypatch.setattr(_janitor, "HIBERNATE_EVERY", 3600.0)  # no janitor round meanwhile
    node = await start_node(user_linger=600.0)
    async with Client.connect(node.port) as c:
        await c.register("alice")
    async with Client.connect(node.port) as c:
        token = await c.login("alice")
    with trio.fail_after(5):  # that session is over (its end is not what is counted)
        while "alice" in node.registry.connections:
            await trio.sleep(0.01)
    spawned = _Tasks()
    trio.lowlevel.add_instrument(spawned)
    try:
        for _ in range(3):
            async with Client.connect(node.port) as c:
                await c.send(type="resume", token=token)
                await c.until(lambda c=c: c.has_frame("welcome"))
            with trio.fail_after(5):
                while "alice" in node.registry.connections:
                    await trio.sleep(0.01)
    finally:
        trio.lowlevel.remove_instrument(spawned)
    assert spawned.names.count("connection") == 0, spawned.names
    assert not [name for name in spawned.names if "ticker" in name], spawned.names
    assert spawned.names.count("user") == 0, spawned.names
    assert "alice" in node.registry.resting  # waiting out the linger, with no task


async def test_a_message_and_its_ack_to_an_idle_mailbox_run_no_mailbox_task(
    start_node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bob's mailbox is asleep: alice's ``send`` (an ``Incoming`` cast) and bob's ``ack``
    (an ``AckMail``) are each taken in the sending connection's task
    (``UserActor.receive_now``), as the mailbox would take them: bob gets the message, alice
    its ``accepted`` and ``receipt``, and no mailbox task is started or stepped. Each used to
    wake the mailbox: a task start (or a step) and a pass of the scheduler, twice per
    message."""
    monkeypatch.setattr(_janitor, "HIBERNATE_EVERY", 3600.0)  # no janitor round meanwhile
    node = await start_node(ack_timeout=60.0)
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
        for client, user in ((alice, "alice"), (bob, "bob")):
            await _log_in(node, client, user)
            mailbox = node.registry.mailboxes[user]
            with trio.fail_after(5):
                while not mailbox.is_hibernating():
                    await trio.sleep(0.01)
        stepped = _Tasks()
        trio.lowlevel.add_instrument(stepped)
        try:
            ids = [await alice.send_message("bob", f"hi {i}") for i in range(3)]
            await bob.until(lambda: len(bob.deliveries) == 3)
            await alice.until(lambda: alice.accepted == ids)
            await alice.until(lambda: len(alice.receipts["delivered"]) == 3)
        finally:
            trio.lowlevel.remove_instrument(stepped)
        assert [d["body"] for d in bob.deliveries] == ["hi 0", "hi 1", "hi 2"]
        assert alice.receipts["delivered"] == [("bob", i) for i in ids]
        assert stepped.names.count("user") == 0, stepped.names
        assert stepped.steps.count("user") == 0, sorted(set(stepped.steps))
        assert node.metrics["received"] == 3


async def test_the_linger_rounds_stop_resting_mailboxes_and_spare_the_others(start_node) -> None:
    """An offline mailbox with nothing pending rests (no ticker) and stops once a linger
    round finds its linger over; one that got a connection back is not stopped."""
    node = await start_node(user_linger=0.3)
    await register_users(node.port, "alice", "bob")
    async with Client.connect(node.port) as c:
        await c.login("alice")
    async with Client.connect(node.port) as bob:
        await bob.login("bob")
        alice_ref = node.registry.mailboxes["alice"]
        with trio.fail_after(5):
            while alice_ref.is_alive():
                await trio.sleep(0.02)
        assert "alice" not in node.registry.mailboxes and "alice" not in node.registry.resting
        await trio.sleep(0.6)  # two lingers: bob, online, is not resting and keeps his
        assert node.registry.mailboxes["bob"].is_alive() and "bob" not in node.registry.resting
        assert node.registry.linger_round(trio.current_time() + 3600) == 0


async def test_close_idle_kicks_silent_connections_once(start_node) -> None:
    node = await start_node(idle_timeout=30.0)
    async with Client.connect(node.port) as c:
        await c.register("alice")
        while not node.connection_actors:
            await trio.sleep(0.01)
        (conn,) = node.connection_actors
        now = trio.current_time()
        assert close_idle(node, now) == 0  # heard from just now
        assert close_idle(node, conn.heard + 30.0) == 1
        assert close_idle(node, conn.heard + 60.0) == 0  # kicked once
        with trio.fail_after(10):
            while node.connection_actors:
                await trio.sleep(0.02)
