"""A cluster on SQLite: allowed on one host with one shared file, and it says so."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import trio
from cluster_harness import CLUSTER_SECRET, LEASE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from client import Client
from node_harness import make_settings, stop_nodes

from actorchat.node import Node


async def test_two_nodes_on_one_sqlite_file_deliver_across_and_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actorchat.cluster")
    nodes = []
    async with trio.open_nursery() as nursery:
        for name in ("n1", "n2"):
            settings = make_settings(
                tmp_path, node_name=name, cluster_secret=CLUSTER_SECRET.encode(),
                cluster_lease=LEASE,
            )
            node = Node(settings)
            await nursery.start(node.run)
            nodes.append(node)
        assert "a cluster on SQLite works only on one host" in caplog.text
        with trio.fail_after(10):
            while not all(n.cluster.status()["linked"] for n in nodes):
                await trio.sleep(0.02)
        async with Client.connect(nodes[0].port) as a, Client.connect(nodes[1].port) as b:
            await a.register("alice")
            await a.register("bob")
            await a.login("alice")
            await b.login("bob")
            ids = [await a.send_message("bob", f"m{i}") for i in range(50)]
            await b.until(lambda: len(b.delivered_ids()) >= 50)
            await a.until(lambda: set(ids) <= set(a.accepted))
            assert b.delivered_ids() == ids
        await stop_nodes(nodes)
        nursery.cancel_scope.cancel()
