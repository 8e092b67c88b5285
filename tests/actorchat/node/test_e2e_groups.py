"""Groups end to end (PROTOCOL.md, Groups; docs/guarantees.md, Groups): in-process node, real
sockets; the concurrent-senders test uses the ``websockets`` library's client in threads (an
implementation independent of the server's trio-websocket), the others trio-websocket.

Waits are bounded (``until``, ``fail_after``); nothing asserts on a bare sleep.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import trio
from client import Client, Inbox, SyncClient, new_id, register_users
from node_harness import DIALECTS, restarted

import supervisors as sv

pytestmark = pytest.mark.parametrize("dialect", DIALECTS, indirect=True)


def groups_seen(inbox: Inbox) -> list[dict[str, Any]]:
    return [f for f in inbox.frames if f["type"] == "group"]


def last_group(inbox: Inbox, group: str | None = None) -> dict[str, Any] | None:
    frames = [f for f in groups_seen(inbox) if group is None or f["group"] == group]
    return frames[-1] if frames else None


def members_now(inbox: Inbox, group: str) -> list[str] | None:
    frame = last_group(inbox, group)
    return None if frame is None else frame["members"]


def removed(inbox: Inbox, group: str) -> bool:
    return any(f["type"] == "group_removed" and f["group"] == group for f in inbox.frames)


def group_order(inbox: Inbox, group: str) -> list[tuple[str, str]]:
    """(from, id) of the group's deliveries, first occurrence only (dedupe), in order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for item in inbox.deliveries:
        key = (item["from"], item["id"])
        if item.get("group") == group and key not in seen:
            seen.add(key)
            out.append(key)
    return out


def is_subsequence(small: list[Any], big: list[Any]) -> bool:
    it = iter(big)
    return all(x in it for x in small)


async def _create(c: Client, name: str, members: list[str]) -> str:
    start = len(c.frames)
    await c.send(type="group_create", name=name, members=members)
    await c.until(lambda: any(f["type"] == "group" for f in c.frames[start:]))
    frame = next(f for f in c.frames[start:] if f["type"] == "group")
    assert frame["name"] == name and frame["owner"] == c.user
    return frame["group"]


async def test_membership_changes_are_seen_by_all_and_owner_rights_hold(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob", "carol", "dave")
    async with (
        Client.connect(node.port) as alice,
        Client.connect(node.port) as bob,
        Client.connect(node.port) as carol,
        Client.connect(node.port) as dave,
    ):
        for c, name in ((alice, "alice"), (bob, "bob"), (carol, "carol"), (dave, "dave")):
            await c.login(name)
        g = await _create(alice, "friends", ["bob", "bob"])
        assert members_now(alice, g) == ["alice", "bob"]
        await bob.until(lambda: members_now(bob, g) == ["alice", "bob"])
        assert last_group(bob, g) == {
            "type": "group", "group": g, "name": "friends", "owner": "alice",
            "members": ["alice", "bob"],
        }

        # owner rights: a member who is not the owner, and a non-member
        await bob.send(type="group_add", group=g, users=["carol"], id="b1")
        assert (await bob.expect_error("not_allowed"))["ref"] == "b1"
        await bob.send(type="group_remove", group=g, users=["alice"], id="b2")
        assert (await bob.expect_error("not_allowed"))["ref"] == "b2"
        await dave.send(type="group_add", group=g, users=["dave"], id="d1")
        assert (await dave.expect_error("not_member"))["ref"] == "d1"
        await dave.send(type="send", group=g, id="d2", body="let me in")
        assert (await dave.expect_error("not_member"))["ref"] == "d2"
        await dave.send(type="group_leave", group=g, id="d3")
        assert (await dave.expect_error("not_member"))["ref"] == "d3"
        await dave.send(type="group_add", group="nope", users=["dave"], id="d4")
        assert (await dave.expect_error("no_such_group"))["ref"] == "d4"
        await dave.send(type="send", group="nope", id="d5", body="x")
        assert (await dave.expect_error("no_such_group"))["ref"] == "d5"
        await alice.send(type="group_add", group=g, users=["zed"], id="a0")
        assert (await alice.expect_error("no_such_user"))["ref"] == "a0"
        await alice.send(type="group_create", name="x", members=["zed"], id="a00")
        assert (await alice.expect_error("no_such_user"))["ref"] == "a00"

        # add: everyone (the new member too) gets the new membership
        await alice.send(type="group_add", group=g, users=["carol"])
        for c in (alice, bob, carol):
            await c.until(lambda c=c: members_now(c, g) == ["alice", "bob", "carol"])
        # remove: the rest see it, the removed one gets group_removed and nothing more
        await alice.send(type="group_remove", group=g, users=["bob"])
        await bob.until(lambda: removed(bob, g))
        for c in (alice, carol):
            await c.until(lambda c=c: members_now(c, g) == ["alice", "carol"])
        await bob.send(type="send", group=g, id="b3", body="still here?")
        assert (await bob.expect_error("not_member"))["ref"] == "b3"
        # the owner leaves: the longest-standing member becomes the owner
        await alice.send(type="group_leave", group=g)
        await alice.until(lambda: removed(alice, g))
        await carol.until(lambda: last_group(carol, g)["members"] == ["carol"])
        assert last_group(carol, g)["owner"] == "carol"
        await carol.send(type="group_add", group=g, users=["dave"])
        await dave.until(lambda: members_now(dave, g) == ["carol", "dave"])
        # the last member leaves: the group is gone
        await dave.send(type="group_leave", group=g)
        await carol.send(type="group_leave", group=g)
        await carol.until(lambda: removed(carol, g))
        await carol.send(type="send", group=g, id="c1", body="anyone?")
        assert (await carol.expect_error("no_such_group"))["ref"] == "c1"
    assert restarted(node) == []


async def test_every_welcome_sends_one_group_frame_per_membership(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob", "carol")
    async with Client.connect(node.port) as alice:
        await alice.login("alice")
        g1 = await _create(alice, "one", ["bob"])
        g2 = await _create(alice, "two", ["bob", "carol"])
        await _create(alice, "three", ["carol"])
        await alice.send(type="group_add", group=g1, users=["carol"])
        await alice.until(lambda: members_now(alice, g1) == ["alice", "bob", "carol"])
        await alice.send(type="group_remove", group=g2, users=["carol"])
        await alice.until(lambda: members_now(alice, g2) == ["alice", "bob"])
    for _ in range(2):  # on every welcome, not just the first
        async with Client.connect(node.port) as bob:
            await bob.login("bob")
            await bob.until(lambda: len(groups_seen(bob)) >= 2)
            await bob.drain(0.2)
            frames = sorted(groups_seen(bob), key=lambda f: f["name"])
            assert [(f["name"], f["members"], f["owner"]) for f in frames] == [
                ("one", ["alice", "bob", "carol"], "alice"),
                ("two", ["alice", "bob"], "alice"),
            ]
            assert {f["group"] for f in frames} == {g1, g2}


async def test_group_messages_online_and_offline_with_receipts_and_retry(start_node):
    node = await start_node()
    await register_users(node.port, "alice", "bob", "carol")
    async with (
        Client.connect(node.port) as alice,
        Client.connect(node.port, auto_read=True) as bob,
    ):
        await alice.login("alice")
        await bob.login("bob")
        g = await _create(alice, "g", ["bob", "carol"])
        ids = [new_id() for _ in range(60)]
        for i, id in enumerate(ids):
            await alice.send(type="send", id=id, group=g, body=f"m{i}")
        await alice.send(type="send", id=ids[3], group=g, body="m3")  # a retry
        # accepted: bob acknowledged, carol's copies stored
        await alice.until(lambda: set(alice.accepted) >= set(ids))
        await bob.until(lambda: len(group_order(bob, g)) >= 60)
        assert group_order(bob, g) == [("alice", id) for id in ids]
        item = bob.deliveries[0]
        assert item["group"] == g and item["to"] == "bob" and item["body"] == "m0"
        receipts = [f for f in alice.frames if f["type"] == "receipt"]
        await alice.until(
            lambda: {i for _, i in alice.receipts["read"]} >= set(ids)
            and {i for _, i in alice.receipts["delivered"]} >= set(ids)
        )
        receipts = [f for f in alice.frames if f["type"] == "receipt"]
        assert {(f["by"], f.get("group")) for f in receipts} == {("bob", g)}
    async with Client.connect(node.port) as carol:
        await carol.login("carol")
        await carol.until(lambda: len(group_order(carol, g)) >= 60)
        await carol.drain(0.3)
        assert group_order(carol, g) == [("alice", id) for id in ids]
        assert len(carol.deliveries) == 60  # the retry was not a second message
        assert node.metrics["group_copies_stored"] >= 60


def _member_thread(
    port: int, user: str, group: str, n: int, go: threading.Barrier, out: dict[str, Any]
) -> None:
    with SyncClient.connect(port) as c:
        c.login(user)
        go.wait(timeout=30)
        ids = [new_id() for _ in range(n)]
        for i, id in enumerate(ids):
            c.send(type="send", id=id, group=group, body=f"{user} {i}")
        c.until(lambda: set(c.accepted) >= set(ids), timeout=60)
        out[user] = (c, ids)
        go.wait(timeout=60)  # stay connected until every sender is accepted
        c.drain(0.3)


async def test_one_order_under_concurrent_senders(start_node):
    """Three members send at once through the ``websockets`` client; a fourth only reads.
    Every member sees the group's messages in one order: each one's sequence is the reader's
    with its own messages left out."""
    node = await start_node()
    names = ["ann", "ben", "cat"]
    await register_users(node.port, *names, "reader")
    n = 150
    async with Client.connect(node.port) as reader:
        await reader.login("reader")
        g = await _create(reader, "busy", names)
        out: dict[str, Any] = {}
        go = threading.Barrier(len(names))
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(
                    trio.to_thread.run_sync, _member_thread, node.port, name, g, n, go, out
                )
            await reader.until(lambda: len(group_order(reader, g)) >= n * len(names), 60)
        order = group_order(reader, g)
    assert len(order) == n * len(names)
    for name in names:
        client, ids = out[name]
        assert [i for u, i in order if u == name] == ids  # per-sender order
        mine = group_order(client, g)
        assert mine == [(u, i) for u, i in order if u != name]  # one order for all
        assert set(client.accepted) >= set(ids)
    assert restarted(node) == []


def _copies(inbox: Inbox, group: str) -> Counter[tuple[str, str]]:
    return Counter((d["from"], d["id"]) for d in inbox.deliveries if d.get("group") == group)


@pytest.mark.parametrize("online", [3, 12], ids=["most-offline", "most-online"])
async def test_group_actor_crash_mid_fan_out_loses_nothing(start_node, online):
    """Kill the group actor again and again while 300 messages fan out to 15 members: every
    message is accepted, every member gets every message once (after dedupe by mid), all in one
    order, and only the group actor restarted."""
    node = await start_node()
    members = [f"m{i:02d}" for i in range(15)]
    await register_users(node.port, "boss", *members)
    n = 300
    ids = [new_id() for _ in range(n)]
    async with Client.connect(node.port) as boss:
        await boss.login("boss")
        g = await _create(boss, "big", members)
        clients: list[Client] = []
        async with trio.open_nursery() as connected:
            # online members stay connected for the whole test
            ready = trio.Semaphore(0)

            async def member(name: str) -> None:
                async with Client.connect(node.port) as c:
                    await c.login(name)
                    clients.append(c)
                    ready.release()
                    await c.until(lambda: len(group_order(c, g)) >= n, 60)
                    await c.drain(0.2)

            for name in members[:online]:
                connected.start_soon(member, name)
            for _ in range(online):
                await ready.acquire()

            # The seam: hold the group's store write of offline copies, so each kill lands
            # mid fan-out (online copies handed, offline ones being written, members held).
            original = node.store.read
            gate: list[trio.Event] = []
            writing = [trio.Event()]

            async def read(method: str, *args: Any) -> Any:
                if method == "put_group_copies" and gate:
                    writing[0].set()
                    await gate[0].wait()
                return await original(method, *args)

            node.store.read = read  # type: ignore[method-assign]
            kills = 0
            for i, id in enumerate(ids):
                if i % 60 == 30:
                    gate.append(trio.Event())
                    writing[0] = trio.Event()
                await boss.send(type="send", id=id, group=g, body=f"b{i}")
                if i % 60 == 40:
                    with trio.fail_after(10):
                        await writing[0].wait()
                    node.groups.actors[g].kill(sv.Error(RuntimeError("injected")))
                    gate.pop().set()
                    kills += 1
                    with trio.fail_after(10):
                        while restarted(node) != [("test/groups/group", kills)]:
                            await trio.sleep(0.001)
            await boss.until(lambda: set(boss.accepted) >= set(ids), 60)
    for c in clients:
        assert group_order(c, g) == [("boss", id) for id in ids]
        mids: dict[tuple[str, str], set[str]] = {}
        for d in c.deliveries:
            mids.setdefault((d["from"], d["id"]), set()).add(d["mid"])
        assert all(len(m) == 1 for m in mids.values())  # redelivered with the same mid
    for name in members[online:]:
        async with Client.connect(node.port) as c:
            await c.login(name)
            await c.until(lambda c=c: len(group_order(c, g)) >= n, 30)
            await c.drain(0.2)
            assert group_order(c, g) == [("boss", id) for id in ids]
            assert max(_copies(c, g).values()) == 1
    assert restarted(node) == [("test/groups/group", kills)]


async def test_typing_to_a_group_reaches_its_other_online_members(start_node):
    """Typing is the presence feature's; groups give it the members (``node.group_members``)."""
    node = await start_node()
    await register_users(node.port, "alice", "bob", "carol", "dave")
    async with (
        Client.connect(node.port) as alice,
        Client.connect(node.port) as bob,
        Client.connect(node.port) as dave,
    ):
        for c, name in ((alice, "alice"), (bob, "bob"), (dave, "dave")):
            await c.login(name)
        g = await _create(alice, "g", ["bob", "carol"])
        assert await node.group_members(g) == ["alice", "bob", "carol"]
        assert await node.group_members("nope") is None
        await alice.send(type="typing", group=g, state="composing")
        await bob.until(lambda: any(f["type"] == "typing" for f in bob.frames))
        typing = next(f for f in bob.frames if f["type"] == "typing")
        assert typing == {"type": "typing", "from": "alice", "state": "composing", "group": g}
        await dave.send(type="typing", group=g, state="composing", id="t1")
        assert (await dave.expect_error("not_member"))["ref"] == "t1"
        await alice.drain(0.2)
        assert not any(f["type"] == "typing" for f in alice.frames)


async def test_messages_sent_before_members_leave_still_complete(start_node):
    """A message is for the members of its turn: bob leaves, then the group is deleted
    (alice leaves too) while bob's copies are unacknowledged; they stay his, and alice still
    hears `accepted` once he acknowledges them."""
    node = await start_node(ack_timeout=30.0)
    await register_users(node.port, "alice", "bob")
    async with (
        Client.connect(node.port) as alice,
        Client.connect(node.port, auto_ack=False) as bob,
    ):
        await alice.login("alice")
        await bob.login("bob")
        g = await _create(alice, "short", ["bob"])
        ids = [new_id() for _ in range(5)]
        for i, id in enumerate(ids):
            await alice.send(type="send", id=id, group=g, body=f"m{i}")
        await bob.until(lambda: len(group_order(bob, g)) >= 5)
        await bob.send(type="group_leave", group=g)
        await bob.until(lambda: removed(bob, g))
        await alice.send(type="group_leave", group=g)
        await alice.until(lambda: removed(alice, g))
        assert not alice.accepted
        await alice.send(type="send", id="late", group=g, body="x")
        assert (await alice.expect_error("no_such_group"))["ref"] == "late"
        await bob.send(type="ack", mids=[d["mid"] for d in bob.deliveries])
        await alice.until(lambda: set(alice.accepted) >= set(ids))
    assert group_order(bob, g) == [("alice", id) for id in ids]
