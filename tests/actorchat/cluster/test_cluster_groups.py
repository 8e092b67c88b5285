"""Groups across cluster nodes on PostgreSQL (docs/guarantees.md, "Groups across nodes"):
members on two nodes, sends from both, one order for every member, ``accepted`` only when
every copy is safe, an offline member's copies from the store, one host per group."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import trio
from cluster_harness import LinkProxy, linked

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from client import Client, new_id
from test_e2e_groups import _create, group_order

from actorchat.cluster import LINK_PATH
from actorchat.node import Node

pytestmark = pytest.mark.postgres


def hosts(group: str, *nodes: Node) -> list[str]:
    return [
        n.settings.node_name
        for n in nodes
        if (ref := n.groups.actors.get(group)) is not None and ref.is_alive()
    ]


async def test_group_with_members_on_two_nodes_has_one_order(cluster):
    n1, n2 = await cluster("n1"), await cluster("n2")
    await linked(n1, n2)
    n = 40
    async with Client.connect(n1.port) as c:
        for name in ("alice", "bob", "carol", "dave"):
            await c.register(name)
    async with (
        Client.connect(n1.port) as alice,
        Client.connect(n1.port, auto_read=True) as dave,
        Client.connect(n2.port, auto_read=True) as bob,
    ):
        await alice.login("alice")
        await dave.login("dave")
        await bob.login("bob")
        g = await _create(alice, "two nodes", ["bob", "carol", "dave"])
        a_ids = [new_id() for _ in range(n)]
        b_ids = [new_id() for _ in range(n)]

        async def send_all(client: Client, ids: list[str]) -> None:
            for i, id in enumerate(ids):
                await client.send(type="send", id=id, group=g, body=f"{client.user} {i}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all, alice, a_ids)
            nursery.start_soon(send_all, bob, b_ids)
        await alice.send(type="send", id=a_ids[5], group=g, body=f"alice {5}")  # a retry
        await bob.send(type="send", id=b_ids[7], group=g, body=f"bob {7}")  # a retry
        await alice.until(lambda: set(alice.accepted) >= set(a_ids), 30)
        await bob.until(lambda: set(bob.accepted) >= set(b_ids), 30)
        await dave.until(lambda: len(group_order(dave, g)) >= 2 * n, 30)
        await bob.until(lambda: len(group_order(bob, g)) >= n, 30)
        await alice.until(lambda: len(group_order(alice, g)) >= n, 30)
        order = group_order(dave, g)
        assert len(order) == 2 * n
        assert [i for u, i in order if u == "alice"] == a_ids
        assert [i for u, i in order if u == "bob"] == b_ids
        assert group_order(bob, g) == [(u, i) for u, i in order if u != "bob"]
        assert group_order(alice, g) == [(u, i) for u, i in order if u != "alice"]
        # One host for the group; receipts of copies that crossed nodes keep the group.
        assert len(hosts(g, n1, n2)) == 1
        assert n1.metrics["cluster_group_copies"] + n2.metrics["cluster_group_copies"] >= n
        for reader in ("bob", "dave"):
            await alice.until(
                lambda r=reader: {i for b, i in alice.receipts["read"] if b == r} >= set(a_ids),
                30,
            )
        receipts = [f for f in alice.frames if f["type"] == "receipt"]
        assert {f.get("group") for f in receipts} == {g}
        assert {f["by"] for f in receipts} == {"bob", "dave"}
    # carol was offline: her copies were stored; she logs in on n2 and gets them in order.
    async with Client.connect(n2.port) as carol:
        await carol.login("carol")
        await carol.until(lambda: len(group_order(carol, g)) >= 2 * n, 30)
        await carol.drain(0.3)
        assert group_order(carol, g) == order
        assert len(carol.deliveries) == 2 * n  # retries were not second messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_group_copies_for_a_cut_node_go_through_the_store_in_order(cluster, nursery):
    port = free_port()
    proxy = LinkProxy(port)
    await nursery.start(proxy.run)
    address = f"ws://127.0.0.1:{proxy.port}{LINK_PATH}"
    n2 = await cluster("n2", port=port, cluster_address=address)  # n1 -> n2 can be cut
    n1 = await cluster("n1")
    await linked(n1, n2)
    async with Client.connect(n1.port) as c:
        for name in ("alice", "bob", "dave"):
            await c.register(name)
    async with (
        Client.connect(n1.port) as alice,
        Client.connect(n1.port) as dave,
        Client.connect(n2.port) as bob,
    ):
        await alice.login("alice")
        await dave.login("dave")
        await bob.login("bob")
        g = await _create(alice, "cut", ["bob", "dave"])

        async def send(count: int, tag: str) -> list[str]:
            ids = [new_id() for _ in range(count)]
            for i, id in enumerate(ids):
                await alice.send(type="send", id=id, group=g, body=f"{tag}{i}")
            await alice.until(lambda: set(alice.accepted) >= set(ids), 20)
            return ids

        before = await send(20, "a")
        assert hosts(g, n1, n2) == ["n1"]
        await bob.until(lambda: len(group_order(bob, g)) >= 20)
        proxy.cut()
        during = await send(20, "b")  # accepted: bob's copies committed to the relay
        await bob.until(lambda: len(group_order(bob, g)) >= 40, 20)
        assert n1.cluster.relay.written >= 1 and n2.cluster.relay.taken >= 1
        proxy.restore()
        await linked(n1, n2)
        after = await send(20, "c")
        await bob.until(lambda: len(group_order(bob, g)) >= 60, 20)
        await dave.until(lambda: len(group_order(dave, g)) >= 60, 20)
        await bob.drain(0.3)
    everything = [("alice", i) for i in before + during + after]
    assert group_order(bob, g) == everything
    assert group_order(dave, g) == everything
    # copies both sent on the link and relayed when it broke were delivered once
    assert len([d for d in bob.deliveries if d.get("group") == g]) == 60
    assert not bob.errors and not alice.errors
