"""Contract 5, bad input hurts no one else, end to end: in-process node, and the independent
``websockets`` sync client run in a worker thread (``trio.to_thread``).

Each bad frame gets its documented error code (PROTOCOL.md, Errors); the connection stays open
unless continuing is unsafe (then it is closed, and only it); no actor restarts; and a
bystander keeps chatting throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
from client import Client, ConnectionLost, SyncClient, new_id
from node_harness import SECRET, restarted

from actorchat.auth import TokenSigner


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args))


def alive(c: SyncClient) -> None:
    """The connection still answers."""
    start = len(c.frames)
    c.send(type="ping")
    c.until(lambda: len(c.frames) > start)
    assert c.frames[start] == {"type": "pong"}


def expect_error(c: SyncClient, code: str, ref: str | None = None) -> dict[str, Any]:
    start = len(c.errors)
    c.until(lambda: len(c.errors) > start)
    error = c.errors[start]
    assert error["code"] == code and error["ref"] == ref, error
    return error


def expect_closed(c: SyncClient) -> int | None:
    with pytest.raises(ConnectionLost):
        c.until(lambda: False, timeout=10)
    assert c.closed is not None
    return c.closed.code


@pytest.fixture
async def node(start_node):
    node = await start_node()
    async with Client.connect(node.port) as c:
        for user in ("alice", "bob", "carol", "dave"):
            await c.register(user)
    return node


async def bystander_ok(node: Any) -> None:
    """Another user, untouched by the abuse: sends and receives as usual."""
    async with Client.connect(node.port) as dave, Client.connect(node.port) as bob:
        await dave.login("dave")
        await bob.login("bob")
        id = await dave.send_message("bob", "still fine?")
        await bob.until(lambda: id in bob.delivered_ids())
        await dave.until(lambda: id in dave.accepted)
    assert restarted(node) == []


CASES: dict[str, tuple[str | bytes, str, str | None]] = {
    "not json": ("{not json", "bad_frame", None),
    "not an object": ("[1, 2, 3]", "bad_frame", None),
    "binary frame": (b'{"type":"ping"}', "bad_frame", None),
    "unknown type": ('{"type":"teleport","id":"t1"}', "unknown_type", "t1"),
    "missing type": ('{"id":"t2"}', "bad_frame", "t2"),
    "wrong field type": ('{"type":"send","id":"t3","to":"bob","body":42}', "bad_frame", "t3"),
    "to and group": ('{"type":"send","id":"t4","to":"bob","group":"g","body":""}', "bad_frame",
                     "t4"),
    "bad user name": ('{"type":"send","id":"t5","to":"bob smith","body":"x"}', "bad_frame",
                      "t5"),
    "frame over the limit": (json.dumps({"type": "ping", "pad": "x" * 70_000}), "too_large",
                             None),
    "body over the limit": (json.dumps({"type": "send", "id": "t6", "to": "bob",
                                        "body": "x" * 17_000}), "too_large", "t6"),
    "send to a missing user": ('{"type":"send","id":"t7","to":"nobody","body":"x"}',
                               "no_such_user", "t7"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_frame_gets_its_code_and_the_connection_survives(node, case):
    data, code, ref = CASES[case]

    def session() -> None:
        with SyncClient.connect(node.port) as c:
            c.login("alice")
            c.ws.send(data)
            expect_error(c, code, ref)
            alive(c)
            # and it still chats
            id = c.send_message("carol", "after the bad frame")
            c.until(lambda: id in c.accepted)

    await in_thread(session)
    await bystander_ok(node)


async def test_frames_before_login_are_refused_and_then_the_connection_closes(node):
    def session() -> None:
        with SyncClient.connect(node.port) as c:
            alive(c)  # ping is allowed before welcome
            c.send(type="send", id="s1", to="bob", body="sneaky")
            expect_error(c, "not_authenticated", "s1")
            c.send(type="ack", mids=["1"])
            expect_error(c, "not_authenticated")
            c.login("alice")  # the connection survived, and logging in still works
            alive(c)
        with SyncClient.connect(node.port) as c:
            limit = node.settings.max_unauthenticated_frames
            for _ in range(limit):
                c.send(type="ack", mids=["1"])
            c.until(lambda: len(c.errors) >= limit)
            c.send(type="ping")
            assert expect_closed(c) == 4003
            assert c.errors[-1]["code"] == "not_authenticated"

    await in_thread(session)
    await bystander_ok(node)


async def test_repeated_bad_frames_close_only_that_connection(node):
    def session() -> None:
        with SyncClient.connect(node.port) as c:
            c.login("alice")
            for _ in range(node.settings.max_bad_frames):
                c.ws.send("garbage")
            assert expect_closed(c) == 4003
            assert c.error_codes() == ["bad_frame"] * node.settings.max_bad_frames

    await in_thread(session)
    await bystander_ok(node)


async def test_frame_over_the_websocket_limit_closes_only_that_connection(node):
    """Over twice max_frame_bytes the WebSocket layer refuses the message itself (1009,
    message too big) before the node parses anything."""

    def session() -> None:
        with SyncClient.connect(node.port) as c:
            c.login("alice")
            c.send(type="ping", pad="x" * (3 * node.settings.max_frame_bytes))
            assert expect_closed(c) == 1009

    await in_thread(session)
    await bystander_ok(node)


async def test_wrong_password_and_unknown_user_get_bad_credentials(node):
    def session() -> None:
        with SyncClient.connect(node.port) as c:
            c.send(type="login", user="alice", password="wrong", id="l1")
            expect_error(c, "bad_credentials", "l1")
            c.send(type="login", user="nobody", password="pw")
            expect_error(c, "bad_credentials")
            assert not c.has_frame("welcome")
            c.send(type="send", id="s1", to="bob", body="x")
            expect_error(c, "not_authenticated", "s1")  # no session was opened
            c.login("alice")
            alive(c)
            c.send(type="register", user="bob", password="pw", id="r1")
            expect_error(c, "user_exists", "r1")
            alive(c)

    await in_thread(session)
    await bystander_ok(node)


async def test_forged_expired_and_malformed_tokens_get_bad_credentials(node):
    now = time.time()
    ttl = node.settings.token_ttl
    forged = TokenSigner(b"y" * 32, ttl).issue("alice", now)
    expired = TokenSigner(SECRET, 60).issue("alice", now - 3600)
    tampered = TokenSigner(SECRET, ttl).issue("alice", now)[:-2] + "AA"

    def session() -> None:
        with SyncClient.connect(node.port) as c:
            for token in (forged, expired, tampered, "not-a-token"):
                c.send(type="resume", token=token, id="r")
                expect_error(c, "bad_credentials", "r")
            assert not c.has_frame("welcome")
            token = c.login("alice")
        with SyncClient.connect(node.port) as c:  # a genuine token resumes the session
            c.send(type="resume", token=token)
            c.until(lambda: c.has_frame("welcome"))
            assert c.user == "alice"

    await in_thread(session)
    await bystander_ok(node)


async def test_from_is_always_the_session_user(node):
    """Sending as someone else is impossible by construction: a `from` field in `send` is an
    unknown optional field, ignored; the delivery says who really sent it."""

    def session() -> None:
        with SyncClient.connect(node.port) as mallory, SyncClient.connect(node.port) as bob:
            mallory.login("carol")
            bob.login("bob")
            mallory.send(type="send", id="x1", to="bob", body="hi, it's alice", **{"from": "alice"})
            bob.until(lambda: len(bob.deliveries) >= 1)
            assert bob.deliveries[0]["from"] == "carol" and bob.deliveries[0]["to"] == "bob"
            mallory.until(lambda: "x1" in mallory.accepted)

    await in_thread(session)
    await bystander_ok(node)


async def test_acking_someone_elses_mids_has_no_effect(node):
    def session() -> None:
        with (
            SyncClient.connect(node.port) as alice,
            SyncClient.connect(node.port, auto_ack=False) as bob,
            SyncClient.connect(node.port) as carol,
        ):
            alice.login("alice")
            bob.login("bob")
            carol.login("carol")
            ids = [alice.send_message("bob", f"m{i}") for i in range(3)]
            bob.until(lambda: len(bob.deliveries) >= 3)
            mids = [d["mid"] for d in bob.deliveries]
            carol.send(type="ack", mids=mids)
            carol.send(type="read", mids=mids)
            alive(carol)
            alice.drain(0.3)
            assert alice.receipts == {"delivered": [], "read": []}
            bob.ws.close()
        # bob's mail is still his and unacknowledged: it comes again, same mids.
        with SyncClient.connect(node.port) as bob:
            bob.login("bob")
            bob.until(lambda: len(bob.deliveries) >= 3)
            assert [d["mid"] for d in bob.deliveries] == mids
            assert [d["id"] for d in bob.deliveries] == ids

    await in_thread(session)
    await bystander_ok(node)


async def test_rate_limited_sends_are_refused_and_not_accepted(start_node):
    node = await start_node(message_burst=5, messages_per_second=1.0)
    async with Client.connect(node.port) as c:
        await c.register("alice")
        await c.register("bob")

    def session() -> None:
        with SyncClient.connect(node.port) as alice:
            alice.login("alice")
            ids = [new_id() for _ in range(8)]
            for id in ids:
                alice.send_message("bob", "x", id=id)
            alice.until(lambda: len(alice.errors) >= 3 and len(alice.accepted) >= 5)
            assert alice.error_codes() == ["rate_limited"] * 3
            assert [e["ref"] for e in alice.errors] == ids[5:]
            assert sorted(alice.accepted) == sorted(ids[:5])
            alive(alice)

    await in_thread(session)
    assert restarted(node) == []


async def test_silent_connection_is_closed_after_idle_timeout(start_node):
    """A connection that sends nothing for idle_timeout is closed (4002); pings keep one open.
    Real time with a short setting: the store thread and real sockets rule out autojump."""
    node = await start_node(idle_timeout=0.5)
    async with Client.connect(node.port) as c:
        await c.register("alice")

    def session() -> None:
        with SyncClient.connect(node.port) as busy, SyncClient.connect(node.port) as silent:
            busy.login("alice")
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:  # three idle periods, a ping every 0.2 s
                alive(busy)
                time.sleep(0.2)
            assert busy.closed is None
            assert expect_closed(silent) == 4002
            assert silent.closed is not None and "idle" in silent.closed.reason

    await in_thread(session)
    assert restarted(node) == []
