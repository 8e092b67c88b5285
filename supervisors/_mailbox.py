"""The bounded mailbox behind every trio actor.

It is a deque with one receiver (the actor's current incarnation) and any number of senders,
built on trio's low-level parking like ``trio._channel`` but with two differences an actor
needs: *signals* (exit signals, Down messages, supervisor requests) are accepted even when the
mailbox is at its bound, because losing them would break supervision; and the queue outlives the
incarnation that reads it, so a restarted actor can keep its mail (see ``ChildSpec.mailbox``).

Blocking calls are the non-blocking call plus a wait (trio's habit): ``put`` tries
``put_nowait`` and parks only on ``MailboxFull``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._errors import ActorDeadError, MailboxFull

__all__ = ["Mailbox"]

#: Given to a parked receiver by ``wake()``; the actor loop ignores it and re-checks its flags.
WAKE: Any = object()


class Mailbox:
    __slots__ = ("_closed", "_items", "_receiver", "_senders", "capacity", "closed_reason")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one message")
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self._receiver: Task | None = None
        self._senders = ParkingLot()
        self._closed = False
        self.closed_reason: Any = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- senders --------------------------------------------------------------------------
    def put_nowait(self, item: Any) -> None:
        if self._closed:
            raise ActorDeadError("the actor is not running", self.closed_reason)
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Value(item))
        elif len(self._items) >= self.capacity:
            raise MailboxFull(f"mailbox full ({self.capacity} messages)")
        else:
            self._items.append(item)

    async def put(self, item: Any) -> None:
        await checkpoint_if_cancelled()
        try:
            self.put_nowait(item)
        except MailboxFull:
            pass
        else:
            await cancel_shielded_checkpoint()
            return
        while True:
            await self._senders.park()
            try:
                self.put_nowait(item)
            except MailboxFull:
                continue
            return

    def put_signal(self, item: Any) -> None:
        """Deliver ``item`` regardless of the bound (dropped silently once closed)."""
        if self._closed:
            return
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Value(item))
        else:
            self._items.append(item)

    # -- the receiver ---------------------------------------------------------------------
    async def get(self) -> Any:
        await checkpoint_if_cancelled()
        if self._items:
            item = self._items.popleft()
            if self._senders:
                self._senders.unpark()
            await cancel_shielded_checkpoint()
            return item
        self._receiver = current_task()

        def abort(_: Callable[[], Any]) -> Abort:
            self._receiver = None
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)

    def get_nowait(self) -> Any:
        """Pop the oldest item; raises ``trio.WouldBlock`` when empty."""
        if not self._items:
            raise trio.WouldBlock
        item = self._items.popleft()
        if self._senders:
            self._senders.unpark()
        return item

    def wake(self) -> None:
        """Make a receiver parked in ``get`` return ``WAKE`` so it re-checks its state."""
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Value(WAKE))

    # -- lifecycle ------------------------------------------------------------------------
    def drain(self) -> list[Any]:
        """Take every queued item (used to fail pending calls on drop or close)."""
        items = list(self._items)
        self._items.clear()
        self._senders.unpark_all()
        return items

    def close(self, reason: Any = None) -> list[Any]:
        """Refuse further messages; returns what was still queued so calls can be failed."""
        self._closed = True
        self.closed_reason = reason
        items = self.drain()
        self.wake()
        return items
