"""``Presence`` and ``PresenceActor`` on a stand-in node (no sockets): the grace timer under
trio's ``MockClock`` (autojump), the connection monitors, last seen written through the store,
subscribe's answers and errors, and typing (relayed now, never queued, never redelivered)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import trio

import supervisors as sv
from actorchat import protocol as p
from actorchat.node._messages import OutFrame
from actorchat.node._presence_node import MAX_SUBSCRIPTIONS, Presence, PresenceActor
from actorchat.store import StoreBatch, StoreUnavailable

GRACE = 5.0


class Sink(sv.Actor):
    """Stands in for a connection actor: keeps what it is sent."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    async def receive(self, message: Any) -> Any:
        self.got.append(message)

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(m.text) for m in self.got if type(m) is OutFrame]


class FakeStore:
    def __init__(self, users: dict[str, float | None]) -> None:
        self.users = users
        self.behind: list[StoreBatch] = []
        self.written: list[StoreBatch] = []
        self.down = False

    def write_behind(self, batch: StoreBatch) -> None:
        self.behind.append(batch)

    async def write(self, batch: StoreBatch, timeout: float | None = None) -> None:
        self.written.append(batch)

    async def read(self, method: str, *args: Any) -> Any:
        assert method == "presence_of"
        await trio.sleep(0.001)  # a real hop takes time: changes may happen meanwhile
        if self.down:
            raise StoreUnavailable("down")
        return {u: self.users[u] for u in args[0] if u in self.users}

    def last_seen(self) -> list[tuple[str, float]]:
        return [row for b in self.behind + self.written for row in b.last_seen]


def fake_node(**users: float | None) -> Any:
    node = SimpleNamespace(
        settings=SimpleNamespace(presence_grace=GRACE),
        wall=lambda: 1000.0 + trio.current_time(),
        store=FakeStore(users),
        registry=SimpleNamespace(connections={}),
    )
    node.presence = Presence(node)  # type: ignore[arg-type]
    return node


class Conn:
    """A connection actor as the hooks and handlers see it."""

    def __init__(self, nursery: trio.Nursery, user: str) -> None:
        self.sink = Sink()
        self.ref = sv.spawn(nursery, self.sink)
        self.user: str | None = user
        self.closing = False

    async def out(self, text: str) -> None:
        await self.ref.send(OutFrame(text))

    def frames(self) -> list[dict[str, Any]]:
        return self.sink.frames()


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def welcome(node: Any, conn: Conn) -> None:
    node.registry.connections[conn.user] = conn.ref
    await node.presence.welcomed(conn, conn.user)


def leave(node: Any, conn: Conn) -> None:
    if node.registry.connections.get(conn.user) is conn.ref:
        del node.registry.connections[conn.user]
    node.presence.left(conn, conn.user)
    conn.user = None


async def test_offline_after_the_grace_with_last_seen_under_mock_clock(autojump_clock) -> None:
    node = fake_node(ann=None, bob=None)
    async with trio.open_nursery() as nursery:
        timer = await sv.spawn_started(nursery, PresenceActor(node.presence))
        ann, bob = Conn(nursery, "ann"), Conn(nursery, "bob")
        await welcome(node, bob)
        await node.presence.on_subscribe(bob, p.Subscribe(users=["ann"]))
        await settle()
        assert bob.frames() == [
            {"type": "presence", "user": "ann", "status": "offline", "last_seen": None}
        ]
        await welcome(node, ann)
        online_at = node.wall()
        leave(node, ann)
        left_at = node.wall()
        await trio.sleep(GRACE - 0.01)
        await settle()
        assert bob.frames()[-1]["status"] == "online"  # still, within the grace
        await trio.sleep(0.02)
        await settle()
        assert bob.frames()[1:] == [
            {"type": "presence", "user": "ann", "status": "online", "last_seen": online_at},
            {"type": "presence", "user": "ann", "status": "offline", "last_seen": left_at},
        ]
        assert ("ann", online_at) in node.store.last_seen()
        assert ("ann", left_at) in node.store.last_seen()
        timer.stop()
        await timer.wait()
        nursery.cancel_scope.cancel()


async def test_quick_reconnect_and_takeover_do_not_flap(autojump_clock) -> None:
    node = fake_node(ann=None, bob=None)
    async with trio.open_nursery() as nursery:
        await sv.spawn_started(nursery, PresenceActor(node.presence))
        bob = Conn(nursery, "bob")
        await welcome(node, bob)
        await node.presence.on_subscribe(bob, p.Subscribe(users=["ann"]))
        first = Conn(nursery, "ann")
        await welcome(node, first)
        second = Conn(nursery, "ann")  # takeover: the new one arrives, then the old one leaves
        await welcome(node, second)
        leave(node, first)
        await trio.sleep(GRACE * 3)
        leave(node, second)
        await trio.sleep(GRACE / 2)
        third = Conn(nursery, "ann")  # a quick reconnect
        await welcome(node, third)
        await trio.sleep(GRACE * 3)
        await settle()
        assert [f["status"] for f in bob.frames()] == ["offline", "online"]
        nursery.cancel_scope.cancel()


async def test_a_killed_connection_goes_offline_through_its_monitor(autojump_clock) -> None:
    node = fake_node(ann=None, bob=None)
    async with trio.open_nursery() as nursery:
        await sv.spawn_started(nursery, PresenceActor(node.presence))
        bob, ann = Conn(nursery, "bob"), Conn(nursery, "ann")
        await welcome(node, bob)
        await node.presence.on_subscribe(bob, p.Subscribe(users=["ann"]))
        await welcome(node, ann)
        await settle()
        ann.ref.kill()  # no on_stop, so no on_leave hook
        await trio.sleep(GRACE + 0.1)
        await settle()
        assert [f["status"] for f in bob.frames()] == ["offline", "online", "offline"]
        assert node.presence.book.connections() == [bob.ref]
        nursery.cancel_scope.cancel()


async def test_a_restarted_presence_actor_monitors_the_connections_again(autojump_clock) -> None:
    node = fake_node(ann=None)
    async with trio.open_nursery() as nursery:
        first = await sv.spawn_started(nursery, PresenceActor(node.presence))
        ann = Conn(nursery, "ann")
        await welcome(node, ann)
        first.stop()
        await first.wait()
        await sv.spawn_started(nursery, PresenceActor(node.presence))
        ann.ref.kill()
        await trio.sleep(GRACE + 0.1)
        assert not node.presence.book.is_online("ann")
        nursery.cancel_scope.cancel()


async def test_stop_stores_last_seen_now_for_everyone_online(autojump_clock) -> None:
    node = fake_node(ann=None, bob=None)
    async with trio.open_nursery() as nursery:
        timer = await sv.spawn_started(nursery, PresenceActor(node.presence))
        ann, bob = Conn(nursery, "ann"), Conn(nursery, "bob")
        await welcome(node, ann)
        await welcome(node, bob)
        await trio.sleep(1.0)
        leave(node, bob)
        bob_left = node.wall()
        await trio.sleep(1.0)
        timer.stop()
        await timer.wait()
        rows = sorted(row for b in node.store.written for row in b.last_seen)
        assert rows == [("ann", node.wall()), ("bob", bob_left)]
        nursery.cancel_scope.cancel()


async def test_subscribe_to_a_missing_user_answers_no_such_user_and_keeps_the_rest() -> None:
    node = fake_node(ann=12.5)
    async with trio.open_nursery() as nursery:
        bob = Conn(nursery, "bob")
        await node.presence.on_subscribe(bob, p.Subscribe(id="s1", users=["ann", "ghost"]))
        await settle()
        frames = bob.frames()
        assert frames[0] == {"type": "presence", "user": "ann", "status": "offline",
                             "last_seen": 12.5}
        assert frames[1]["type"] == "error" and frames[1]["code"] == "no_such_user"
        assert frames[1]["ref"] == "s1" and "ghost" in frames[1]["message"]
        assert node.presence.book.subscriptions(bob.ref) == {"ann"}
        nursery.cancel_scope.cancel()


async def test_subscribe_over_the_cap_changes_nothing() -> None:
    node = fake_node(**{f"u{i}": None for i in range(MAX_SUBSCRIPTIONS + 1)})
    async with trio.open_nursery() as nursery:
        bob = Conn(nursery, "bob")
        users = [f"u{i}" for i in range(MAX_SUBSCRIPTIONS)]
        await node.presence.on_subscribe(bob, p.Subscribe(users=users))
        await node.presence.on_subscribe(bob, p.Subscribe(id="s2", users=["u1024"]))
        await settle()
        error = bob.frames()[-1]
        assert (error["type"], error["code"], error["ref"]) == ("error", "too_large", "s2")
        assert len(node.presence.book.subscriptions(bob.ref)) == MAX_SUBSCRIPTIONS
        await node.presence.on_unsubscribe(bob, p.Unsubscribe(users=["u0"]))
        await node.presence.on_subscribe(bob, p.Subscribe(users=["u1024"]))
        assert "u1024" in node.presence.book.subscriptions(bob.ref)
        nursery.cancel_scope.cancel()


async def test_subscribe_while_the_store_is_down_subscribes_nothing() -> None:
    node = fake_node(ann=None)
    node.store.down = True
    async with trio.open_nursery() as nursery:
        bob = Conn(nursery, "bob")
        with pytest.raises(StoreUnavailable):  # the connection answers `unavailable`
            await node.presence.on_subscribe(bob, p.Subscribe(users=["ann"]))
        assert node.presence.book.subscriptions(bob.ref) == frozenset()
        nursery.cancel_scope.cancel()


async def test_a_change_during_the_store_read_is_not_lost(autojump_clock) -> None:
    node = fake_node(ann=None, bob=None)
    async with trio.open_nursery() as nursery:
        await sv.spawn_started(nursery, PresenceActor(node.presence))
        ann, bob = Conn(nursery, "ann"), Conn(nursery, "bob")
        async with trio.open_nursery() as inner:
            inner.start_soon(node.presence.on_subscribe, bob, p.Subscribe(users=["ann"]))
            await trio.sleep(0)  # subscribed, reading the store
            await welcome(node, ann)
        await settle()
        assert bob.frames()[-1]["status"] == "online"
        nursery.cancel_scope.cancel()


# -- typing --------------------------------------------------------------------------------------
async def test_typing_goes_to_the_online_recipient_only_and_is_never_redelivered() -> None:
    node = fake_node(ann=None, bob=None)
    async with trio.open_nursery() as nursery:
        ann, bob = Conn(nursery, "ann"), Conn(nursery, "bob")
        await welcome(node, bob)
        await node.presence.on_typing(ann, p.Typing(to="bob", state="composing"))
        await settle()
        assert bob.frames() == [{"type": "typing", "from": "ann", "state": "composing"}]
        # bob reconnects: nothing of the typing was kept anywhere to deliver again
        leave(node, bob)
        again = Conn(nursery, "bob")
        await welcome(node, again)
        await node.presence.on_typing(ann, p.Typing(to="carol", state="paused"))  # offline
        await settle()
        assert again.frames() == [] and ann.frames() == []
        assert node.store.behind == [] or all(not b.put_mail for b in node.store.behind)
        nursery.cancel_scope.cancel()


async def test_group_typing_needs_the_groups_feature_and_membership() -> None:
    node = fake_node()
    async with trio.open_nursery() as nursery:
        ann, bob, cat = Conn(nursery, "ann"), Conn(nursery, "bob"), Conn(nursery, "cat")
        for c in (ann, bob, cat):
            await welcome(node, c)
        await node.presence.on_typing(ann, p.Typing(id="t1", group="g1", state="composing"))
        await settle()
        assert ann.frames()[-1]["code"] == "no_such_group"

        async def group_members(group: str) -> list[str] | None:
            return ["ann", "bob", "dan"] if group == "g1" else None

        node.group_members = group_members
        await node.presence.on_typing(ann, p.Typing(group="g1", state="composing"))
        await node.presence.on_typing(cat, p.Typing(id="t2", group="g1", state="paused"))
        await node.presence.on_typing(ann, p.Typing(id="t3", group="g2", state="paused"))
        await settle()
        assert bob.frames() == [
            {"type": "typing", "from": "ann", "state": "composing", "group": "g1"}
        ]
        assert cat.frames()[-1]["code"] == "not_member"
        assert [f.get("code") for f in ann.frames()] == ["no_such_group", "no_such_group"]
        nursery.cancel_scope.cancel()


# -- the cluster's side (not wired yet: a stand-in peer drives it) ---------------------------------
class Peer:
    """A peer node as a subscriber: keeps the presence frames it is given."""

    def __init__(self) -> None:
        self.frames: list[p.Presence] = []

    def presence_changed(self, frame: p.Presence) -> None:
        self.frames.append(frame)


async def test_a_peer_is_one_more_source_and_subscriber(autojump_clock) -> None:
    node = fake_node(ann=None, bob=None)
    presence = node.presence
    announced = []
    presence.announce.append(announced.append)
    forwarded: list[tuple[str, str]] = []
    presence.forward_typing = lambda user, text: forwarded.append((user, text))
    async with trio.open_nursery() as nursery:
        await sv.spawn_started(nursery, PresenceActor(presence))
        bob = Conn(nursery, "bob")
        await welcome(node, bob)
        bob_online = node.wall()
        await presence.on_subscribe(bob, p.Subscribe(users=["ann"]))
        # ann is online on node n2: bob (here) is told; nothing is stored or announced here
        presence.remote("n2", "ann", "online", 500.0)
        await settle()
        assert bob.frames()[-1] == {"type": "presence", "user": "ann", "status": "online",
                                    "last_seen": 500.0}
        assert [c.user for c in announced] == ["bob"]
        # a peer subscribes to bob for its connections, and hears bob go offline
        peer = Peer()
        assert presence.subscribe_remote(peer, ["bob"]) == [
            p.Presence(user="bob", status="online", last_seen=bob_online)
        ]
        await presence.on_typing(bob, p.Typing(to="ann", state="composing"))
        assert forwarded == [("ann", '{"type":"typing","from":"bob","state":"composing"}')]
        leave(node, bob)
        await trio.sleep(GRACE + 0.1)
        assert [(f.user, f.status) for f in peer.frames] == [("bob", "offline")]
        assert [(c.user, c.status) for c in announced] == [("bob", "online"), ("bob", "offline")]
        presence.node_gone("n2")
        assert not presence.book.is_online("ann")
        nursery.cancel_scope.cancel()


async def test_logins_and_logouts_cost_the_presence_actor_nothing(autojump_clock) -> None:
    """A login storm (issue 5): the monitor of a connection is set up and taken down without
    a message to the presence actor, and its timer sleeps through logouts whose deadline is
    after the one it waits for; a killed connection still goes offline (its Down)."""
    got: list[Any] = []
    wakes = 0

    class Counting(PresenceActor):
        async def receive(self, message: Any) -> Any:
            got.append(message)
            return await super().receive(message)

    node = fake_node(ann=None, bob=None)
    presence = node.presence
    async with trio.open_nursery() as nursery:
        await sv.spawn_started(nursery, Counting(presence))
        bob = Conn(nursery, "bob")
        await welcome(node, bob)
        leave(node, bob)  # bob's deadline: the timer sleeps until it
        await settle()
        expire = presence.expire

        def counted() -> None:
            nonlocal wakes
            wakes += 1
            expire()

        presence.expire = counted  # type: ignore[method-assign]
        for _ in range(20):
            ann = Conn(nursery, "ann")
            await welcome(node, ann)
            leave(node, ann)
            await trio.sleep(0.01)
        await settle()
        assert got == [] and wakes == 0
        last = Conn(nursery, "ann")
        await welcome(node, last)
        last.ref.kill()  # no on_leave: the monitor counts
        await trio.sleep(GRACE + 0.1)
        assert [type(m) for m in got] == [sv.Down]
        assert not presence.book.is_online("ann") and not presence.book.is_online("bob")
        nursery.cancel_scope.cancel()
