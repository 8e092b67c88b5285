"""The mailbox actor of one user: its ``DeliveryQueue`` is the delivery queue.

It runs under the ``users`` simple_one_for_one supervisor (transient, mailbox KEEP). The queue
object is part of the child's start args, so a restarted incarnation finds it as the crashed one
left it: nothing it held is lost. All database work happens in one side task (``_storage``), so
the mailbox loop never waits on the database; the queue's writes are batched per turn of that
task and, across users, by the store front's group commit.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

import supervisors as sv
from actorchat.store import DedupeRow, StoreBatch, StoreUnavailable

from ._messages import (
    AckMail,
    Attach,
    Detach,
    Incoming,
    Kick,
    OutAccepted,
    OutDeliver,
    OutReceipt,
    ReadMail,
    Tick,
)
from ._queue import DeliveryQueue, Effects, Item

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actorchat.user")

PAGE = 500


class UserActor(sv.Actor):
    mailbox_size = 10_000

    def __init__(self, name: str, queue: DeliveryQueue, node: Node) -> None:
        self.name = name
        self.queue = queue
        self.node = node
        self.work = trio.Event()
        self.idle_since: float | None = None
        self.conn_monitor: sv.Monitor | None = None

    async def on_start(self) -> None:
        self.start_task(self._storage)
        self.start_task(self._ticker)
        conn = self.queue.conn
        if conn is not None:  # restarted while a connection was attached: deliver again
            if conn.is_alive():
                self._apply(self._attach(conn))
            else:
                self._apply(self.queue.detach())
                self.queue.conn = None

    async def receive(self, message: Any) -> Any:
        now = trio.current_time()
        kind = type(message)
        if kind is Incoming:
            self._apply(
                self.queue.incoming(
                    message.sender,
                    message.id,
                    message.body,
                    self.node.wall(),
                    group=message.group,
                    media=message.media,
                )
            )
            return True
        if kind is AckMail:
            self._apply(self.queue.ack(message.mids, self.node.wall()))
        elif kind is ReadMail:
            self._apply(self.queue.read(message.mids))
        elif kind is Attach:
            self._apply(self._attach(message.conn))
        elif kind is Detach or kind is sv.Down:
            ref = message.conn if kind is Detach else message.ref
            if self.queue.conn is ref:
                self._detach()
        elif kind is Tick:
            await self._tick(now)
        return None

    async def on_stop(self, reason: sv.ExitReason) -> None:
        # Shutdown (SIGTERM) or idle: whatever is not stored yet goes to the store now, so it
        # is accepted and survives the restart.
        for item in self.queue.unstored():
            self.queue.to_store.setdefault(item.key, item)
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
            except (sv.ActorDeadError, sv.MailboxFull, AttributeError):
                # A stalled or dead socket: close it; its mail goes to the store.
                if conn is not None:
                    conn.kill()
                self._detach()
        for item in fx.store:
            self.queue.to_store.setdefault(item.key, item)
        if fx.store or fx.page_in:
            self.work.set()
        for sender, ids in fx.accepted.items():
            node.notify(sender, OutAccepted(tuple(ids)))
        for sender, ids in fx.delivered.items():
            node.notify(sender, OutReceipt("delivered", self.name, tuple(ids)))
        for sender, ids in fx.read.items():
            node.notify(sender, OutReceipt("read", self.name, tuple(ids)))
        if fx.write_behind is not None:
            node.store.write_behind(fx.write_behind)

    async def _tick(self, now: float) -> None:
        queue = self.queue
        self._apply(queue.overdue(self.node.wall(), self.node.settings.ack_timeout))
        if not queue.attached:
            for item in queue.unstored():
                queue.to_store.setdefault(item.key, item)
            if queue.to_store:
                self.work.set()
        if queue.idle() and not queue.to_store and not queue.paging:
            if self.idle_since is None:
                self.idle_since = now
            elif now - self.idle_since >= self.node.user_linger:
                self.node.registry.mailbox_gone(self.name, self.ref)
                self.stop()
        else:
            self.idle_since = None

    async def _ticker(self) -> None:
        period = min(1.0, self.node.settings.ack_timeout / 2)
        while True:
            await trio.sleep(period)
            try:
                self.ref.send_nowait(Tick())
            except sv.MailboxFull:
                pass

    # -- the store ----------------------------------------------------------------------------
    async def _storage(self) -> None:
        backoff = 0.05
        while True:
            await self.work.wait()
            self.work = trio.Event()
            while self.queue.to_store:
                if await self._write_once():
                    backoff = 0.05
                else:
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            if self.queue.paging:
                await self._page_in()

    async def _write_once(self) -> bool:
        queue = self.queue
        items: list[Item] = list(queue.to_store.values())[:1000]
        rows = [item.row(self.name) for item in items if not item.stored]
        dedupe = [
            DedupeRow(item.sender, item.id, self.name, item.key, item.ts)
            for item in items
            if not item.stored
        ]
        try:
            if rows:
                await self.node.store.write(StoreBatch(put_mail=rows, put_dedupe=dedupe))
        except StoreUnavailable as e:
            log.warning("%s: store unavailable (%s); %d messages wait", self.name, e, len(items))
            for item in queue.store_failed(items):
                queue.to_store.pop(item.key, None)
                self.node.unavailable(item.sender, item.id)
            return False
        for item in items:
            queue.to_store.pop(item.key, None)
        self._apply(queue.stored(items, self.node.wall()))
        return True

    async def _page_in(self) -> None:
        try:
            rows = await self.node.store.read(
                "fetch_mail", self.name, self.queue.page_after(), PAGE
            )
        except StoreUnavailable:
            await trio.sleep(1.0)
            self.work.set()
            return
        self._apply(self.queue.paged(rows, PAGE, self.node.wall()))
