"""Housekeeping: forget dedupe rows older than the retention, so the table stays bounded; and
put idle users' actors to sleep.

A retry older than ``DEDUPE_RETENTION`` is taken as a new message (docs/guarantees.md). The
janitor deletes in bounded steps (``prune_dedupe`` takes at most ``limit`` rows a call), so it
never holds the store's one connection for long; an unreachable database is simply tried again
at the next round.

Every ``HIBERNATE_EVERY`` seconds the janitor hibernates (``SupervisorRef.hibernate_idle``)
every mailbox actor and connection actor parked on an empty mailbox: until its next message it
owns no trio task (its frames, cancel scope and task: about 3 KB each, most of what an idle
logged-in user would cost beyond its socket). A busy actor is woken by its next message, so it
pays one task start per round at most. A login asks for it at once (``Actor.hibernate`` in
``ConnectionActor._welcome`` and on the mailbox's ``Attach``): in a burst of logins the tasks
that waited for a round piled up, and the memory they then freed stayed in the process's RSS
(``test_janitor.py::test_a_login_leaves_both_actors_asleep_without_a_round``). The same
rounds close connections silent for ``idle_timeout`` (``_connection.close_idle``). Guarded
by ``tests/actorchat/node/test_janitor.py`` and
``test_e2e_bad_input.py::test_silent_connection_is_closed_after_idle_timeout``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import supervisors as sv
from actorchat.store import StoreUnavailable

from ._connection import close_idle

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actorchat.janitor")

DEDUPE_RETENTION = 7 * 24 * 3600.0
PRUNE_EVERY = 600.0
PRUNE_STEP = 10_000
HIBERNATE_EVERY = 2.0
# The linger rounds (``_linger_rounds``): every quarter of ``user_linger``, within these.
LINGER_EVERY = 1.0
LINGER_MIN = 0.02


class Janitor(sv.Actor):
    def __init__(self, node: Node, every: float = PRUNE_EVERY) -> None:
        self.node = node
        self.every = every

    async def on_start(self) -> None:
        self.start_task(self._rounds)
        self.start_task(self._hibernate_rounds)
        self.start_task(self._linger_rounds)

    async def _linger_rounds(self) -> None:
        # The offline mailboxes with nothing pending stop after ``user_linger``, woken here
        # rather than by a timer task each (``Registry.linger_round``): within a round of it.
        while True:
            every = min(LINGER_EVERY, max(self.node.user_linger / 4, LINGER_MIN))
            await trio.sleep(every)
            self.node.registry.linger_round(trio.current_time())

    async def _hibernate_rounds(self) -> None:
        # Also the idle timeout's clock: a connection silent for it is closed within a round.
        every = min(HIBERNATE_EVERY, self.node.settings.idle_timeout / 4)
        while True:
            await trio.sleep(every)
            close_idle(self.node, trio.current_time())
            await self.hibernate_once()

    async def hibernate_once(self) -> int:
        """Hibernate the idle user and connection actors; returns how many went to sleep."""
        count = 0
        for supervisor in (self.node.users, self.node.connections):
            try:
                count += (await supervisor()).hibernate_idle()
            except sv.ActorDeadError:
                pass  # being restarted: the next round finds it
        return count

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
