"""Dedupe rows past the retention are forgotten, in bounded steps (``_janitor.py``)."""

from __future__ import annotations

import trio
from node_harness import make_settings, stop_node

from actorchat.node import Node
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
