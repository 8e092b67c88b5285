"""Presence and typing across cluster nodes on PostgreSQL (docs/guarantees.md, "Across
nodes"): a subscriber on one node sees a user on another come online and go offline (after
the grace), a peer that leaves takes its users offline, typing crosses nodes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from client import Client
from cluster_harness import linked
from node_harness import stop_node
from test_e2e_groups import _create

pytestmark = pytest.mark.postgres

GRACE = 0.3


def presences(c: Client, user: str) -> list[dict[str, Any]]:
    return [f for f in c.frames if f["type"] == "presence" and f["user"] == user]


def statuses(c: Client, user: str) -> list[str]:
    return [f["status"] for f in presences(c, user)]


async def test_a_subscriber_sees_a_user_on_another_node_online_then_offline(cluster):
    n1 = await cluster("n1", presence_grace=GRACE)
    n2 = await cluster("n2", presence_grace=GRACE)
    await linked(n1, n2)
    async with Client.connect(n1.port) as c:
        for name in ("ann", "bob"):
            await c.register(name)
    async with Client.connect(n1.port) as ann:
        await ann.login("ann")
        await ann.send(type="subscribe", users=["bob"])
        await ann.until(lambda: statuses(ann, "bob") == ["offline"])
        async with Client.connect(n2.port) as bob:
            await bob.login("bob")
            await ann.until(lambda: statuses(ann, "bob") == ["offline", "online"])
            closing = n1.wall()
        await ann.until(lambda: statuses(ann, "bob") == ["offline", "online", "offline"])
        told = n1.wall()
        offline = presences(ann, "bob")[-1]
        assert closing <= offline["last_seen"] <= told
        assert told - closing >= GRACE  # n2 waited out its grace before telling
        # A quick reconnect on the other node within the grace: no flap.
        async with Client.connect(n2.port) as bob:
            await bob.login("bob")
            await ann.until(lambda: len(statuses(ann, "bob")) == 4)
        async with Client.connect(n2.port) as bob:
            await bob.login("bob")
            await bob.send(type="ping", id="p")
            await bob.until(lambda: bob.has_frame("pong"))
        await ann.until(lambda: len(statuses(ann, "bob")) == 5)
        assert statuses(ann, "bob") == ["offline", "online", "offline", "online", "offline"]


async def test_a_peer_that_leaves_takes_its_users_offline(cluster):
    n1 = await cluster("n1", presence_grace=GRACE)
    n2 = await cluster("n2", presence_grace=GRACE)
    await linked(n1, n2)
    async with Client.connect(n1.port) as c:
        for name in ("ann", "bob"):
            await c.register(name)
    async with Client.connect(n1.port) as ann, Client.connect(n2.port) as bob:
        await ann.login("ann")
        await bob.login("bob")
        await ann.send(type="subscribe", users=["bob"])
        # (the answer may come before n1 hears of bob's login: then "online" follows it)
        await ann.until(lambda: statuses(ann, "bob")[-1:] == ["online"])
        seen = len(statuses(ann, "bob"))
        with trio.fail_after(30):
            await stop_node(n2)  # it leaves the cluster: its users go offline elsewhere
        await ann.until(lambda: statuses(ann, "bob")[seen:] == ["offline"], 20)


async def test_typing_crosses_nodes_to_a_user_and_to_a_group(cluster):
    n1 = await cluster("n1", presence_grace=GRACE)
    n2 = await cluster("n2", presence_grace=GRACE)
    await linked(n1, n2)
    async with Client.connect(n1.port) as c:
        for name in ("ann", "bob", "cal"):
            await c.register(name)
    async with (
        Client.connect(n1.port) as ann,
        Client.connect(n2.port) as bob,
        Client.connect(n2.port) as cal,
    ):
        await ann.login("ann")
        await bob.login("bob")
        await cal.login("cal")

        def typings(c: Client) -> list[dict[str, Any]]:
            return [f for f in c.frames if f["type"] == "typing"]

        # ann's node learns bob is online on n2 over the link (no subscription needed)
        with trio.fail_after(10):
            while "n2" not in n1.presence.book.nodes_of("bob"):
                await trio.sleep(0.02)
        await ann.send(type="typing", to="bob", state="composing")
        await bob.until(lambda: len(typings(bob)) == 1)
        assert typings(bob)[0]["from"] == "ann" and typings(bob)[0]["state"] == "composing"
        g = await _create(ann, "t", ["bob", "cal"])
        await ann.send(type="typing", group=g, state="paused")
        await cal.until(lambda: any(t.get("group") == g for t in typings(cal)))
        await bob.until(lambda: any(t.get("group") == g for t in typings(bob)))
