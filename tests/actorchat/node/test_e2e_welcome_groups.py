"""A welcome's ``group`` frames come from node memory (``Memberships``, issue 5): a login costs
no store read once the user's mailbox and groups are known, and no membership change made
while a user is offline is missed on its next welcome. In-process node, real sockets."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from client import Client

pytestmark = pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)


async def _welcome(port: int, user: str, token: str | None = None) -> list[Any]:
    """Log in (by token if given), then ping: the pong comes after every ``group`` frame of
    the welcome (the connection sends them before it reads the ping). Returns the groups."""
    async with Client.connect(port) as c:
        if token is None:
            await c.login(user)
        else:
            start = len(c.frames)
            await c.send(type="resume", token=token)
            await c.until(lambda: len(c.frames) > start)
            assert c.frames[start]["type"] == "welcome", c.frames[start]
        await c.send(type="ping")
        await c.until(lambda: c.has_frame("pong"))
        return [(f["group"], f["owner"], f["members"]) for f in c.frames if f["type"] == "group"]


async def test_changes_made_while_offline_are_in_the_next_welcome(start_node):
    node = await start_node()
    node.group_linger = 0.0  # idle group actors stop: welcomes describe groups from memory
    async with Client.connect(node.port) as c:
        for name in ("alice", "bob", "carol"):
            await c.register(name)
    for name in ("bob", "carol"):  # known now (in no group), then offline
        assert await _welcome(node.port, name) == []
        assert node.groups.memberships.groups_of(name) == []

    async def wait_idle(group: str) -> None:
        with trio.fail_after(10):
            while group in node.groups.actors:
                await c.drain(0.1)

    async with Client.connect(node.port) as c:
        await c.login("alice")
        start = len(c.frames)
        await c.send(type="group_create", name="g", members=["carol"])
        await c.until(lambda: any(f["type"] == "group" for f in c.frames[start:]))
        g = next(f for f in c.frames[start:] if f["type"] == "group")["group"]
        await c.send(type="group_add", group=g, users=["bob"])
        await c.until(lambda: c.frames[-1].get("members") == ["alice", "carol", "bob"])
        await wait_idle(g)
        memberships = node.groups.memberships
        assert memberships.groups_of("bob") is not None  # the welcome is from memory
        assert await _welcome(node.port, "bob") == [(g, "alice", ["alice", "carol", "bob"])]
        assert await _welcome(node.port, "carol") == [(g, "alice", ["alice", "carol", "bob"])]

        await c.send(type="group_remove", group=g, users=["bob"])
        await c.until(lambda: c.frames[-1].get("members") == ["alice", "carol"])
        await wait_idle(g)
        assert memberships.groups_of("bob") is not None
        assert await _welcome(node.port, "bob") == []
        assert await _welcome(node.port, "carol") == [(g, "alice", ["alice", "carol"])]
        await c.send(type="group_leave", group=g)
        await c.until(lambda: c.frames[-1]["type"] == "group_removed")
        await wait_idle(g)
    assert await _welcome(node.port, "alice") == []
    assert await _welcome(node.port, "carol") == [(g, "carol", ["carol"])]


async def test_a_token_login_with_the_mailbox_in_memory_reads_nothing(start_node, monkeypatch):
    node = await start_node(user_linger=60.0)
    async with Client.connect(node.port) as c:
        await c.register("dave")
        token = await c.login("dave")
        await c.send(type="ping")  # after the welcome's hooks (their first reads)
        await c.until(lambda: c.has_frame("pong"))
    assert "dave" in node.registry.mailboxes
    reads: list[str] = []
    read = node.store.read

    async def counted(method: str, *args: Any) -> Any:
        reads.append(method)
        return await read(method, *args)

    monkeypatch.setattr(node.store, "read", counted)
    for _ in range(3):
        assert await _welcome(node.port, "dave", token) == []
    assert reads == []
