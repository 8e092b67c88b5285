"""Housekeeping: forget dedupe rows older than the retention, so the table stays bounded.

A retry older than ``DEDUPE_RETENTION`` is taken as a new message (docs/guarantees.md). The
janitor deletes in bounded steps (``prune_dedupe`` takes at most ``limit`` rows a call), so it
never holds the store's one connection for long; an unreachable database is simply tried again
at the next round.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import supervisors as sv
from actorchat.store import StoreUnavailable

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actorchat.janitor")

DEDUPE_RETENTION = 7 * 24 * 3600.0
PRUNE_EVERY = 600.0
PRUNE_STEP = 10_000


class Janitor(sv.Actor):
    def __init__(self, node: Node, every: float = PRUNE_EVERY) -> None:
        self.node = node
        self.every = every

    async def on_start(self) -> None:
        self.start_task(self._rounds)

    async def _rounds(self) -> None:
        while True:
            await self.prune_once()
            await trio.sleep(self.every)

    async def prune_once(self) -> int:
        """Delete every dedupe row past the retention; returns how many."""
        cutoff = self.node.wall() - DEDUPE_RETENTION
        total = 0
        try:
            while True:
                n = await self.node.store.read("prune_dedupe", cutoff)  # <= PRUNE_STEP rows
                total += n
                if n < PRUNE_STEP:
                    break
                await trio.sleep(0)  # let the traffic's own store requests in between
        except StoreUnavailable as e:
            log.info("dedupe pruning postponed: %s", e)
        if total:
            log.info("pruned %d dedupe rows older than %.0f days", total, DEDUPE_RETENTION / 86400)
        return total
