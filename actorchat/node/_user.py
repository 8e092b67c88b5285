"""The mailbox actor of one user: its ``DeliveryQueue`` is the delivery queue.

It runs under the ``users`` simple_one_for_one supervisor (transient, mailbox KEEP). The queue
object is part of the child's start args, so a restarted incarnation finds it as the crashed one
left it: nothing it held is lost. All database work happens in one side task (``_storage``), so
the mailbox loop never waits on the database; the queue's writes are batched per turn of that
task and, across users, by the store front's group commit.
"""

from __future__ import annotations

import logging
from logging import DEBUG
from typing import TYPE_CHECKING, Any

import trio

import supervisors as sv
from actorchat import protocol as p
from actorchat.logs import MESSAGES, trace, trace_ids, trace_items
from actorchat.store import DedupeRow, StoreBatch, StoreUnavailable

from ._connection import error_text, tell
from ._messages import (
    AckMail,
    Attach,
    Detach,
    Incoming,
    IncomingBatch,
    Kick,
    OutAccepted,
    OutDeliver,
    OutFrame,
    OutReceipt,
    ReadMail,
    Release,
    Tick,
)
from ._queue import DeliveryQueue, Effects, Item

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actorchat.user")

PAGE = 500
WRITE_BATCH = 1000  # items per store write


def merge_effects(into: Effects, fx: Effects) -> None:
    """Add ``fx`` (what ``DeliveryQueue.incoming`` returns) to ``into``, keeping the order of
    deliveries, writes and each sender's ids, so one ``_apply`` does the work of many."""
    assert fx.write_behind is None and not fx.page_in, "incoming() neither deletes nor pages"
    into.deliver.extend(fx.deliver)
    into.store.extend(fx.store)
    for mine, theirs in ((into.accepted, fx.accepted), (into.delivered, fx.delivered),
                         (into.read, fx.read)):
        for sender, ids in theirs.items():
            mine.setdefault(sender, []).extend(ids)
    for name in ("group_accepted", "group_delivered", "group_read"):
        theirs = getattr(fx, name)
        if theirs:
            mine = getattr(into, name)
            if mine is None:
                mine = {}
                setattr(into, name, mine)
            for key, ids in theirs.items():
                mine.setdefault(key, []).extend(ids)


def ticker_nap(due: float | None, now: float, period: float, ack_timeout: float) -> float:
    """How long a connected mailbox's ticker sleeps: until ``due`` (when the first item can be
    overdue, wall time; None: none can), but at least ``period`` (so a Tick it has just sent
    is handled before the next) and at most ``ack_timeout``."""
    if due is None:
        return period
    return min(ack_timeout, max(period, due - now))


# What ``UserActor.receive_now`` takes: the casts of a connection (a monitor's ``Down`` and a
# link frame's ``IncomingBatch``, a call, still go through the mailbox).
RECEIVED_NOW = frozenset({Incoming, AckMail, ReadMail, Attach, Detach})


class UserActor(sv.Actor):
    mailbox_size = 10_000
    # The ticker's current wait (``_ticker``), so that a login can end it early; a class
    # default: a user whose ticker never ran stores none.
    _nap: trio.CancelScope | None = None

    def __init__(self, name: str, queue: DeliveryQueue, node: Node) -> None:
        self.name = name
        self.label = name  # `python -m actorchat tree` shows whose mailbox this is
        self.queue = queue
        self.node = node
        self.idle_since: float | None = None
        self.conn_monitor: sv.Monitor | None = None
        # The two side tasks run only while they have work (see _wake_storage/_wake_ticker):
        # most users are connected and idle, and a parked task costs ~5 KB each.
        self.storing = False
        self.ticking = False
        self.leaving = False  # its linger is over: it stops (``_tick``), and rests no more

    async def on_start(self) -> None:
        if self.queue.to_store or self.queue.paging:
            # Restarted after a crash mid-write or mid-page-in: resume that work, or the queue
            # stays "paging" forever and its stored mail is never delivered. Guarded by
            # test_e2e_crash.py::test_mailbox_crash_during_page_in_loses_nothing.
            self._wake_storage()
        conn = self.queue.conn
        if conn is not None:  # restarted while a connection was attached: deliver again
            if conn.is_alive():
                self._apply(self._attach(conn))
            else:
                self._apply(self.queue.detach())
                self.queue.conn = None
        self._wake_ticker()  # not connected (mail for an offline user): rests until linger

    async def receive(self, message: Any) -> Any:
        try:
            return await self._receive(message)
        finally:
            self._wake_ticker()

    async def _receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Tick:
            await self._tick(trio.current_time())
        elif kind is Release:
            self.leaving = True
            self.stop()
        else:
            return self._take_now(message, kind)
        return None

    def receive_now(self, message: Any) -> bool:
        """What a connection casts while this mailbox is idle (no mail queued: most of the
        time, outside a burst), handled at once in the connection's task (``supervisors``)
        rather than by waking the mailbox in a task of its own: a cast ``send``
        (``Incoming``), an ``ack`` or ``read``, a login's ``Attach`` and a logout's
        ``Detach``. None of them awaits anything (their effects are casts and write-behind
        batches), and they are taken one at a time, in order, as ``receive`` takes them: only
        an empty mailbox qualifies. A message handled here skips a pass of the scheduler on
        its way (the sender's ``send`` is queued for the recipient's connection in the very
        step that read it) and the task switch that waking the mailbox costs: two per relayed
        message, one for its ``send`` and one for its ``ack``."""
        kind = type(message)
        if kind not in RECEIVED_NOW:
            return False
        self._take_now(message, kind)
        self._wake_ticker()
        return True

    def _take_now(self, message: Any, kind: type) -> Any:
        """Every message but a ``Tick`` and a ``Release``: none awaits anything. Returns the
        answer to a call (whether an ``Incoming``, or each of a batch's, was taken)."""
        if kind is Incoming:
            return self._incoming(message)
        if kind is IncomingBatch:
            return self._incoming_batch(message)
        if kind is AckMail:
            self._apply(self.queue.ack(message.mids, self.node.wall()))
        elif kind is ReadMail:
            self._apply(self.queue.read(message.mids))
        elif kind is Attach:
            self._attached(message)
        elif kind is Detach or kind is sv.Down:
            self._gone(message, kind)
        return None

    def _incoming(self, message: Incoming) -> bool:
        """One message for this mailbox: taken (True) or refused (the store is behind)."""
        fx = self._take(message, self.node.wall(), MESSAGES.isEnabledFor(DEBUG))
        self._apply(fx)
        if message.reply is not None:  # a cast: nobody waits for our answer
            if fx.refused:
                self._refuse(message)
            else:
                self.node.metrics["received"] += 1
        return not fx.refused

    def _attached(self, message: Attach) -> None:
        self._apply(self._attach(message.conn))
        if self._nap is not None and self._quiet():
            # The ticker that ``on_start`` started (not connected yet then) has nothing to
            # do: end its wait now rather than a period later. In a burst of logins a ticker
            # task per login for a second was most of what the burst left behind in the RSS.
            # (It checks ``_quiet`` again before it ends: no wake-up is lost.)
            nap, self._nap = self._nap, None
            nap.cancel()
        # A login: most users idle after it. Sleep (no task) once this is done, rather than
        # keep a parked task until the janitor's next round: in a burst of logins those tasks
        # piled up, and the memory they freed stayed in the process (RSS).
        self.hibernate()

    def _gone(self, message: Detach | sv.Down, kind: type) -> None:
        ref = message.conn if kind is Detach else message.ref  # type: ignore[union-attr]
        if self.queue.conn is ref:
            self._detach()
        if kind is sv.Down:
            # A killed connection never ran its on_stop: unregister it for it.
            self.node.registry.connection_gone(self.name, ref)

    def _refuse(self, message: Incoming) -> None:
        text = error_text(
            p.ErrorCode.UNAVAILABLE,
            f"{self.name} has too much mail waiting for storage; send it again later",
            message.id,
        )
        tell(message.reply, OutFrame(text))  # gone: its client retries what was not accepted

    def _incoming_batch(self, batch: IncomingBatch) -> list[bool]:
        """A link frame's mail for this user, in order: each message decided as one
        ``Incoming``, their effects applied once (one delivery to the connection, one notice
        per sender), so the per-message cost is the queue's alone."""
        wall, tracing = self.node.wall(), MESSAGES.isEnabledFor(DEBUG)
        taken: list[bool] = []
        merged = Effects()
        for message in batch.items:
            fx = self._take(message, wall, tracing)
            taken.append(not fx.refused)
            merge_effects(merged, fx)
        self._apply(merged)
        return taken

    def _take(self, message: Incoming, wall: float, tracing: bool) -> Effects:
        """The queue's decision on one message (``tracing``: the lines of a message's life,
        logs.py); the caller applies the effects."""
        seen = tracing and (message.sender, message.id) in self.queue.seen
        fx = self.queue.incoming(
            message.sender, message.id, message.body, wall,
            group=message.group, media=message.media,
        )
        if tracing:
            self._trace_incoming(message, fx, seen)
        if fx.refused:
            # The store is behind: nothing was queued, the sender hears `unavailable`.
            # Guarded by test_e2e_delivery.py::test_slow_store_sheds_new_mail_not_memory.
            self.node.metrics["refused_store_backlog"] += 1
        return fx

    async def on_stop(self, reason: sv.ExitReason) -> None:
        # Shutdown (SIGTERM) or idle: whatever is not stored yet goes to the store now, so it
        # is accepted and survives the restart.
        # (Written here, inline: not through _owe, which would wake the storage task too.)
        for item in self.queue.unstored():
            self.queue.owe(item)
        with trio.move_on_after(self.node.settings.ack_timeout):
            while self.queue.to_store:
                if not await self._write_once():
                    break

    # -- connection -------------------------------------------------------------------------
    def _attach(self, conn: sv.ActorRef) -> Effects:
        old = self.queue.conn
        if old is not None and old is not conn:
            try:
                old.send_nowait(Kick(4001, "session taken over by another connection"))
            except (sv.ActorDeadError, sv.MailboxFull):
                pass
        if self.conn_monitor is not None:
            self.demonitor(self.conn_monitor)
        self.queue.conn = conn
        self.conn_monitor = self.monitor(conn)
        self.idle_since = None
        return self.queue.attach(self.node.wall())

    def _detach(self) -> None:
        self.queue.conn = None
        if self.conn_monitor is not None:
            self.demonitor(self.conn_monitor)
            self.conn_monitor = None
        self._apply(self.queue.detach())

    # -- effects ------------------------------------------------------------------------------
    def _apply(self, fx: Effects) -> None:
        node = self.node
        if fx.deliver:
            conn = self.queue.conn
            try:
                conn.send_nowait(OutDeliver(tuple(fx.deliver), self.name))
                node.metrics["delivered"] += len(fx.deliver)
            except (sv.ActorDeadError, sv.MailboxFull, AttributeError):
                # A stalled or dead socket: close it; its mail goes to the store.
                if conn is not None:
                    conn.kill()
                self._detach()
        self._owe(fx.store)
        if fx.page_in:
            self._wake_storage()
        delivered = fx.delivered
        for sender, ids in fx.accepted.items():
            node.metrics["accepted"] += len(ids)
            # An ack accepts and receipts the same ids: one message to the sender for both.
            receipt = delivered.get(sender)
            if receipt is not None:
                receipt = OutReceipt("delivered", self.name, tuple(receipt))
            node.notify(sender, OutAccepted(tuple(ids), receipt))
        for sender, ids in delivered.items():
            if sender not in fx.accepted:
                node.notify(sender, OutReceipt("delivered", self.name, tuple(ids)))
        for sender, ids in fx.read.items():
            node.notify(sender, OutReceipt("read", self.name, tuple(ids)))
        if fx.group_accepted or fx.group_delivered or fx.group_read:
            node.groups.effects(self.name, fx)  # copies of group messages (_groups.py)
        if fx.write_behind is not None:
            node.metrics["drained"] += len(fx.write_behind.delete_mail)
            node.store.write_behind(fx.write_behind)
        if MESSAGES.isEnabledFor(DEBUG):
            self._trace(fx)

    # -- the lines of a message's life (only when actorchat.message logs at DEBUG) -------------
    def _trace_incoming(self, message: Incoming, fx: Effects, seen: bool) -> None:
        event = "refused" if fx.refused else "duplicate" if seen else "queued"
        key = self.queue.seen.get((message.sender, message.id))
        mid = None if key is None else str(key)
        node = self.node.settings.node_name
        trace(event, node, message.sender, message.id, self.name, mid, group=message.group)

    def _trace(self, fx: Effects) -> None:
        node, queue = self.node.settings.node_name, self.queue
        trace_items("delivered", node, self.name, fx.deliver)
        trace_ids("accepted", node, self.name, fx.accepted, queue.seen)
        trace_ids("acked", node, self.name, fx.delivered, queue.seen)
        trace_ids("read", node, self.name, fx.read, queue.seen)
        if fx.write_behind is not None:
            self._trace_drained([key for _, key in fx.write_behind.delete_mail])

    def _trace_drained(self, keys: list[int]) -> None:
        node = self.node.settings.node_name
        for key in keys:
            who = self.queue.recent.get(key)
            if who is not None:
                trace("drained", node, who[0], who[1], self.name, str(key))

    async def _tick(self, now: float) -> None:
        queue = self.queue
        wall, ack_timeout = self.node.wall(), self.node.settings.ack_timeout
        self._apply(queue.overdue(wall, ack_timeout))
        if not queue.attached:
            self._owe(queue.unstored())
        if self._resting():
            if self.idle_since is None:
                self.idle_since = now
            elif now - self.idle_since >= self.node.user_linger and not self.ref.mailbox_depth():
                # Only with nothing queued behind this Tick: a cast already queued (an Attach
                # from a login that found this mailbox a moment ago) would be dropped with the
                # mailbox. Once unregistered here (no await in between), nobody finds this ref.
                # Guarded by test_e2e_delivery.py::test_login_racing_the_idle_mailbox_stop_...
                self.node.registry.mailbox_gone(self.name, self.ref)
                self.leaving = True
                self.stop()
        else:
            self.idle_since = None

    def _quiet(self) -> bool:
        """Connected with nothing pending: no timer is needed until something arrives."""
        queue = self.queue
        return (
            queue.attached
            and not queue.items
            and not queue.to_store
            and not queue.spilling
            and not queue.paging
        )

    def _resting(self) -> bool:
        """Offline with nothing to do but wait out ``user_linger`` (then it stops): no timer
        of its own is needed, the janitor's linger rounds wake it (``Registry.rest``)."""
        queue = self.queue
        return (
            not queue.attached
            and not queue.to_store
            and not queue.paging
            and queue.idle()  # last: it looks at every item
        )

    def _rest(self) -> None:
        """Wait out the linger without a timer: registered for the janitor's linger rounds
        (idle since now, or since a ticker saw it idle), unless it is stopping."""
        if self.leaving:
            return
        if self.idle_since is None:
            self.idle_since = trio.current_time()
        self.node.registry.rest(self.name, self.ref, self.idle_since)

    def _wake_ticker(self) -> None:
        """After every message: a timer only while one is needed (``_ticker``); a resting
        mailbox is registered for the janitor's linger rounds instead."""
        if self._resting():
            self._rest()
            return
        self.idle_since = None
        self.node.registry.wake(self.name)
        if not self.ticking and not self._quiet():
            self.ticking = True
            self.start_task(self._ticker)

    async def _ticker(self) -> None:
        # Idle connected users are most users: no timer wakes them every period (the benchmark
        # measured ~5% of a core per 1,000 idle users with one each), and no task waits for
        # them either (~5 KB each): the ticker ends once the queue is quiet, and the next
        # message that leaves it not quiet starts it again (``receive`` -> ``_wake_ticker``).
        # Nor for users who left with nothing pending (``_resting``): a ticker started at each
        # logout only to count down the linger was a task per token login (the login storm),
        # so the janitor's linger rounds count it down for all of them (``Registry.rest``).
        # No wake-up is lost: the test of ``_quiet()`` and the reset of ``ticking`` happen in
        # one step (no checkpoint between them, and trio runs one task at a time), so work that
        # arrived before that step is seen by the test, and work after it finds ``ticking``
        # False and starts a new ticker. (What makes the queue not quiet outside ``receive``,
        # in the storage task, is caught by the next message, as when the ticker parked.)
        ack_timeout = self.node.settings.ack_timeout
        period = min(1.0, ack_timeout / 2)
        try:
            while True:
                with trio.move_on_after(self._nap_length(period, ack_timeout)) as nap:
                    self._nap = nap
                    await trio.sleep_forever()
                early = self._nap is not nap  # ended by a login that left us quiet (Attach)
                self._nap = None
                if not early:
                    try:
                        self.ref.send_nowait(Tick())
                    except sv.MailboxFull:
                        pass
                if self._quiet():
                    return
                if self._resting():
                    self._rest()  # the linger rounds count the linger down instead
                    return
        finally:
            self._nap = None
            self.ticking = False

    def _nap_length(self, period: float, ack_timeout: float) -> float:
        """How long the ticker may sleep: connected, the only thing a Tick does is store what
        is overdue (``DeliveryQueue.overdue``), so it sleeps until the first item can be (at
        least ``period``, at most ``ack_timeout``); otherwise ``period``. With mail flowing
        and acknowledged, a mailbox woke every second only to find nothing overdue: at 5,000
        users with a message each in flight, the expiring naps were a quarter of the node's
        CPU (benchmarks/run.py's 5,000-user relay)."""
        queue = self.queue
        if not queue.attached:
            return period
        return ticker_nap(queue.next_due(ack_timeout), self.node.wall(), period, ack_timeout)

    # -- the store ----------------------------------------------------------------------------
    def _owe(self, items: list[Item]) -> None:
        """These items must reach the store: queue them (once each) and wake the writer."""
        for item in items:
            self.queue.owe(item)
        if self.queue.to_store:
            self._wake_storage()

    def _wake_storage(self) -> None:
        if not self.storing:
            self.storing = True
            self.start_task(self._storage)

    async def _storage(self) -> None:
        # Runs only while there is mail to write or a page to fetch, then ends: an idle user
        # keeps no task for it. Started by ``_wake_storage`` whenever work is queued (``_owe``,
        # a ``page_in`` effect, a restart with work left). No wake-up is lost: the loop's last
        # test (nothing owed, not paging) and the reset of ``storing`` in ``finally`` run in
        # one step (no checkpoint between them; trio runs one task at a time), so work queued
        # before that step is seen by the test, and work queued after it finds ``storing``
        # False and starts a new task. Work queued while a write or a page-in awaits is seen
        # by the next test of the loop. Guarded by test_user_lazy.py.
        backoff = 0.05
        try:
            while True:
                while self.queue.to_store:
                    if await self._write_once():
                        backoff = 0.05
                    else:
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                if not self.queue.paging:
                    return
                await self._page_in()
        finally:
            self.storing = False

    def _acked_unstored(self, item: Item) -> bool:
        """Acknowledged (so accepted, and gone from the queue) before its write committed.
        A spill-only item is never in ``queue.items`` either, but it is not accepted yet."""
        return item.accepted and not item.stored and item.key not in self.queue.items

    async def _write_once(self) -> bool:
        queue = self.queue
        # Mail acknowledged while it waited here needs no row: writing it would leave a row
        # that nothing deletes, delivered again by the next incarnation of this mailbox.
        for item in [item for item in queue.to_store.values() if self._acked_unstored(item)]:
            del queue.to_store[item.key]
        items: list[Item] = list(queue.to_store.values())[:WRITE_BATCH]
        unstored = [item for item in items if not item.stored]
        rows = [item.row(self.name) for item in unstored]
        dedupe = [DedupeRow(i.sender, i.id, self.name, i.key, i.ts) for i in unstored]
        try:
            if rows:
                await self.node.store.write(StoreBatch(put_mail=rows, put_dedupe=dedupe))
        except StoreUnavailable as e:
            log.warning("%s: store unavailable (%s); %d messages wait", self.name, e, len(items))
            acked = {item.key for item in items if self._acked_unstored(item)}
            for key in acked:  # delivered and acknowledged meanwhile: nothing to give up
                queue.to_store.pop(key, None)
            # Everything stays owed under its key (the commit may even have happened: its
            # answer was lost); spill-only senders hear `unavailable` once and their retries
            # are deduplicated. Guarded by test_queue.py and test_outage.py.
            for item in queue.store_failed([item for item in items if item.key not in acked]):
                if item.group is None:  # a group's copy waits in its group, not its sender
                    self.node.unavailable(item.sender, item.id)
            return False
        for item in items:
            queue.to_store.pop(item.key, None)
        # Acknowledged while the write was in flight: the ack found the item unstored and
        # deleted nothing, so delete the row now; and these are not spill-only items, which
        # ``queue.stored`` would take them for. Guarded by
        # test_e2e_delivery.py::test_ack_during_store_write_leaves_no_row_behind.
        acked = {item.key for item in items if self._acked_unstored(item)}
        if acked:
            for item in items:
                if item.key in acked:
                    item.stored = True
            self.node.store.write_behind(
                StoreBatch(delete_mail=[(self.name, key) for key in sorted(acked)])
            )
            self.node.metrics["drained"] += len(acked)
        self.node.metrics["stored"] += len(rows)
        if MESSAGES.isEnabledFor(DEBUG):
            trace_items("stored", self.node.settings.node_name, self.name, unstored)
            self._trace_drained(sorted(acked))
        written = [item for item in items if item.key not in acked]
        self._apply(queue.stored(written, self.node.wall()))
        return True

    async def _page_in(self) -> None:
        try:
            rows = await self.node.store.read(
                "fetch_mail", self.name, self.queue.page_after(), PAGE
            )
        except StoreUnavailable:
            await trio.sleep(1.0)  # still paging: the storage loop tries again
            return
        self.node.metrics["loaded"] += len(rows)
        if MESSAGES.isEnabledFor(DEBUG):
            node = self.node.settings.node_name
            for row in rows:
                trace("loaded", node, row.sender, row.client_id, self.name, str(row.key))
        self._apply(self.queue.paged(rows, PAGE, self.node.wall()))
