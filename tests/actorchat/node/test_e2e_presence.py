"""Presence, last seen and typing end to end: real sockets, the independent ``websockets`` sync
client (run in worker threads against an in-process node, on SQLite and PostgreSQL), and a
node process restarted to show that last seen is kept in the store.

Times: the node and the test share the machine's wall clock, so a ``last_seen`` is checked to
lie between two times the test took around the event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
from client import Client, SyncClient
from node_harness import DIALECTS, restarted

GRACE = 0.5


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args))


def presences(c: SyncClient, user: str) -> list[dict[str, Any]]:
    return [f for f in c.frames if f["type"] == "presence" and f["user"] == user]


def next_presence(c: SyncClient, user: str, timeout: float = 10.0) -> dict[str, Any]:
    start = len(presences(c, user))
    c.until(lambda: len(presences(c, user)) > start, timeout)
    return presences(c, user)[start]


def typings(c: SyncClient) -> list[dict[str, Any]]:
    return [f for f in c.frames if f["type"] == "typing"]


def pong(c: SyncClient) -> None:
    """Ping and read up to the pong: whatever the node had to say before it has arrived."""
    start = len(c.frames)
    c.send(type="ping")
    c.until(lambda: any(f["type"] == "pong" for f in c.frames[start:]))


@pytest.fixture
async def node(start_node):
    node = await start_node(presence_grace=GRACE, typing_per_second=1.0, typing_burst=3)
    async with Client.connect(node.port) as c:
        for user in ("ann", "bob", "carol"):
            await c.register(user)
    return node


@pytest.mark.parametrize("dialect", DIALECTS, indirect=True)
async def test_presence_online_then_offline_after_the_grace_with_last_seen(node) -> None:
    def scenario() -> None:
        with SyncClient.connect(node.port) as bob:
            bob.login("bob")
            bob.send(type="subscribe", users=["ann"])
            assert next_presence(bob, "ann") == {
                "type": "presence", "user": "ann", "status": "offline", "last_seen": None
            }
            before_login = time.time()
            with SyncClient.connect(node.port) as ann:
                ann.login("ann")
                online = next_presence(bob, "ann")
                assert online["status"] == "online"
                assert before_login <= online["last_seen"] <= time.time()
                pong(ann)
                closing = time.time()
            offline = next_presence(bob, "ann", timeout=GRACE + 10)
            told = time.time()
            assert offline["status"] == "offline"
            assert closing <= offline["last_seen"] <= told
            assert told - closing >= GRACE  # not before the grace period ran out
            # A later subscriber gets the same last seen (memory or store, whichever).
            with SyncClient.connect(node.port) as carol:
                carol.login("carol")
                carol.send(type="subscribe", users=["ann", "bob"])
                assert next_presence(carol, "ann") == offline
                assert next_presence(carol, "bob")["status"] == "online"

    await in_thread(scenario)
    assert restarted(node) == []


async def test_quick_reconnect_and_takeover_do_not_flap(start_node) -> None:
    grace = 2.0
    node = await start_node(presence_grace=grace)
    async with Client.connect(node.port) as c:
        await c.register("ann")
        await c.register("bob")

    def resume(c: SyncClient, token: str) -> None:
        c.send(type="resume", token=token)  # no password hash: a quick reconnect
        c.until(lambda: c.has_frame("welcome"))

    def scenario() -> None:
        with SyncClient.connect(node.port) as bob:
            bob.login("bob")
            with SyncClient.connect(node.port) as ann:
                token = ann.login("ann")
                bob.send(type="subscribe", users=["ann"])
                # (the answer may be offline, then online: ann's welcome can reach her
                # before the node has counted her online)
                bob.until(lambda: [f["status"] for f in presences(bob, "ann")][-1:] == ["online"])
                seen = len(presences(bob, "ann"))
            closed = time.monotonic()
            with SyncClient.connect(node.port) as ann:  # back at once
                resume(ann, token)
                with SyncClient.connect(node.port) as ann2:  # a second device takes over
                    resume(ann2, token)
                    pong(ann2)
                    bob.drain(closed + grace + 0.5 - time.monotonic())
                    assert presences(bob, "ann")[seen:] == []  # no flap
            offline = next_presence(bob, "ann", timeout=10)  # and once really gone: offline
            assert offline["status"] == "offline"

    await in_thread(scenario)


async def test_unsubscribe_answers_nothing_and_unknown_users_get_no_such_user(node) -> None:
    def scenario() -> None:
        with SyncClient.connect(node.port) as bob:
            bob.login("bob")
            bob.send(type="subscribe", id="s1", users=["ann", "nobody"])
            assert next_presence(bob, "ann")["status"] == "offline"
            bob.until(lambda: bool(bob.errors))
            assert bob.errors[0]["code"] == "no_such_user" and bob.errors[0]["ref"] == "s1"
            start = len(bob.frames)
            bob.send(type="unsubscribe", users=["ann", "nobody"])
            pong(bob)
            assert [f["type"] for f in bob.frames[start:]] == ["pong"]
            with SyncClient.connect(node.port) as ann:
                ann.login("ann")
                pong(ann)
            bob.drain(GRACE + 0.5)
            assert len(presences(bob, "ann")) == 1  # nothing after the unsubscribe

    await in_thread(scenario)


async def test_typing_reaches_only_online_recipients_and_is_never_redelivered(node) -> None:
    def scenario() -> None:
        with SyncClient.connect(node.port) as ann, SyncClient.connect(node.port) as bob:
            ann.login("ann")
            bob.login("bob")
            ann.send(type="typing", to="bob", state="composing")
            ann.send(type="typing", to="carol", state="composing")  # carol is offline
            pong(ann)
            assert [f["type"] for f in ann.frames[1:]] == ["pong"]  # never acknowledged
            bob.until(lambda: bool(typings(bob)))
            assert typings(bob) == [{"type": "typing", "from": "ann", "state": "composing"}]
            with SyncClient.connect(node.port) as carol:
                carol.login("carol")
                pong(carol)
                carol.drain(0.3)
                assert typings(carol) == []
        with SyncClient.connect(node.port) as bob:  # reconnect: nothing comes again
            bob.login("bob")
            pong(bob)
            bob.drain(0.3)
            assert typings(bob) == []

    await in_thread(scenario)


async def test_typing_over_the_rate_limit_is_answered_rate_limited_and_dropped(node) -> None:
    def scenario() -> None:
        with SyncClient.connect(node.port) as ann, SyncClient.connect(node.port) as bob:
            ann.login("ann")
            bob.login("bob")
            for i in range(6):
                ann.send(type="typing", id=f"t{i}", to="bob", state="composing")
            pong(ann)  # the connection stays open
            assert [e["code"] for e in ann.errors] == ["rate_limited"] * 3
            assert [e["ref"] for e in ann.errors] == ["t3", "t4", "t5"]
            pong(bob)
            bob.drain(0.3)
            assert len(typings(bob)) == 3  # the burst; the rest was dropped

    await in_thread(scenario)


async def test_group_typing_reaches_the_other_members_online_now(start_node) -> None:
    node = await start_node()
    async with Client.connect(node.port) as c:
        for user in ("ann", "bob", "carol", "dave"):
            await c.register(user)

    def scenario() -> None:
        with (
            SyncClient.connect(node.port) as ann,
            SyncClient.connect(node.port) as bob,
            SyncClient.connect(node.port) as dave,
        ):
            ann.login("ann")
            bob.login("bob")
            dave.login("dave")
            ann.send(type="group_create", name="g", members=["bob", "carol"])
            ann.until(lambda: ann.has_frame("group"))
            group = next(f["group"] for f in ann.frames if f["type"] == "group")
            bob.until(lambda: bob.has_frame("group"))
            ann.send(type="typing", group=group, state="composing")
            bob.until(lambda: bool(typings(bob)))
            assert typings(bob) == [
                {"type": "typing", "from": "ann", "state": "composing", "group": group}
            ]
            dave.send(type="typing", id="t1", group=group, state="composing")
            dave.send(type="typing", id="t2", group="no-such-group", state="composing")
            dave.until(lambda: len(dave.errors) == 2)
            assert [(e["code"], e["ref"]) for e in dave.errors] == [
                ("not_member", "t1"), ("no_such_group", "t2")
            ]
            pong(ann)
            assert typings(ann) == []  # not to the sender itself
        with SyncClient.connect(node.port) as carol:  # offline then: nothing comes later
            carol.login("carol")
            pong(carol)
            carol.drain(0.3)
            assert typings(carol) == []

    await in_thread(scenario)


# -- a node process: last seen is kept in the store across a restart -------------------------------
@pytest.mark.slow
def test_last_seen_survives_a_node_restart(node_process) -> None:
    proc = node_process(presence_grace="0.3")
    with SyncClient.connect(proc.port) as ann:
        ann.register("ann")
        ann.register("bob")
        ann.register("carol")
        ann.login("ann")
        pong(ann)
        closing = time.time()
    with SyncClient.connect(proc.port) as bob:
        bob.login("bob")
        bob.send(type="subscribe", users=["ann"])
        bob.until(lambda: any(f["status"] == "offline" for f in presences(bob, "ann")))
        last_seen = presences(bob, "ann")[-1]
        if last_seen["status"] == "online":  # asked within the grace: wait for the change
            last_seen = next_presence(bob, "ann")
        assert last_seen["status"] == "offline" and last_seen["last_seen"] >= closing
        with SyncClient.connect(proc.port) as carol:
            carol.login("carol")  # online while the node stops
            pong(carol)
            stopping = time.time()
            assert proc.terminate() == 0
    proc.kill()
    again = node_process(presence_grace="0.3")
    with SyncClient.connect(again.port) as bob:
        bob.login("bob")
        bob.send(type="subscribe", users=["ann", "carol"])
        assert next_presence(bob, "ann") == last_seen
        carol_seen = next_presence(bob, "carol")
        assert carol_seen["status"] == "offline" and carol_seen["last_seen"] >= stopping
