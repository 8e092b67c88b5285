"""The bounded mailbox behind every actor.

A deque with one receiver (the actor's current incarnation) and any number of senders, built on
trio's low-level parking the way ``trio._channel`` builds memory channels (a parked receiver is
handed the item directly; parked senders wait in FIFO order with their item, and the receiver
moves the oldest one in when it takes a message), with three differences an actor needs:

* *signals* (exit signals, Down messages, supervisor requests) are accepted even when the
  mailbox is at its bound, because losing them would break supervision (``put_signal``);
* the queue outlives the incarnation that reads it, so a restarted actor can keep its mail
  (``ChildSpec.mailbox``), and a closed mailbox can be reopened when a terminated child is
  restarted (``reopen``);
* items a thread actor had taken but not handled go back to the front (``requeue_front``);
* a *hibernated* receiver (``_actor._Process.hibernate``) has no task parked here: the
  ``_sleeper`` is roused instead (it runs the actor again in a fresh task) by whatever would
  have woken a parked receiver: a message, a signal, ``wake()`` or ``requeue_front``.

Blocking calls are the non-blocking call plus a wait (trio's habit): ``put`` tries
``put_nowait`` and parks only on ``MailboxFull``. Guarded by ``tests/supervisors/test_mailbox.py``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

import outcome
import trio
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._errors import ActorDeadError, MailboxFull

__all__ = ["WAKE", "Mailbox"]

#: Given to a parked receiver by ``wake()``; the actor loop ignores it and re-checks its flags.
WAKE: Any = object()


class Mailbox:
    __slots__ = (
        "_closed",
        "_items",
        "_receiver",
        "_senders",
        "_sleeper",
        "capacity",
        "closed_reason",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one message")
        self.capacity = capacity
        # Both created on first use: an idle actor's mailbox is empty (a parked receiver is
        # handed each item directly) and rarely has a sender waiting; an empty deque alone
        # is ~700 bytes, 15% of an idle actor (``benchmarks/actors.py``).
        self._items: deque[Any] | None = None
        self._receiver: Task | None = None
        self._senders: OrderedDict[Task, Any] | None = None
        self._closed = False
        self.closed_reason: Any = None
        # A hibernated receiver: anything with ``resume()`` (``_actor._Process``).
        self._sleeper: Any = None

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    def _queue(self) -> deque[Any]:
        items = self._items
        if items is None:
            items = self._items = deque()
        return items

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
        else:
            items = self._items
            if items is None:
                self._items = deque((item,))
            elif len(items) >= self.capacity:
                raise MailboxFull(f"mailbox full ({self.capacity} messages)")
            else:
                items.append(item)
            if self._sleeper is not None:
                self._rouse()

    async def put(self, item: Any) -> None:
        await checkpoint_if_cancelled()
        try:
            self.put_nowait(item)
        except MailboxFull:
            pass
        else:
            await cancel_shielded_checkpoint()
            return
        # Park with the item; the receiver moves it in when it frees a slot (FIFO, like
        # trio's memory channels), or close() fails us.
        task = current_task()
        if self._senders is None:
            self._senders = OrderedDict()
        senders = self._senders
        senders[task] = item

        def abort(_: Any) -> Abort:
            senders.pop(task, None)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def put_signal(self, item: Any) -> None:
        """Deliver ``item`` regardless of the bound (dropped silently once closed)."""
        if self._closed:
            return
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Value(item))
        else:
            self._queue().append(item)
            if self._sleeper is not None:
                self._rouse()

    def _rouse(self) -> None:
        sleeper, self._sleeper = self._sleeper, None
        sleeper.resume()

    def _admit_senders(self) -> None:
        """Move parked senders' items in while there is room."""
        senders = self._senders
        items = self._queue()
        while senders and len(items) < self.capacity:
            task, item = senders.popitem(last=False)
            items.append(item)
            reschedule(task)

    # -- the receiver ---------------------------------------------------------------------
    async def get(self) -> Any:
        # The actor loop inlines this (``_actor._Process._loop``): keep the two in step.
        await checkpoint_if_cancelled()
        items = self._items
        if items:
            item = items.popleft()
            if self._senders:
                self._admit_senders()
            await cancel_shielded_checkpoint()
            return item
        self._receiver = current_task()
        return await wait_task_rescheduled(self.abort_get)

    def abort_get(self, _: Any) -> Abort:
        """The abort function of a receiver parked in ``get``."""
        self._receiver = None
        return Abort.SUCCEEDED

    def receiver_idle(self) -> bool:
        """The receiver is parked in ``get`` on an empty mailbox: it has nothing to do."""
        return self._receiver is not None and not self._items

    def get_nowait(self) -> Any:
        """Pop the oldest item; raises ``trio.WouldBlock`` when empty."""
        items = self._items
        if not items:
            raise trio.WouldBlock
        item = items.popleft()
        if self._senders:
            self._admit_senders()
        return item

    def wake(self) -> None:
        """Make a receiver parked in ``get`` return ``WAKE`` so it re-checks its state."""
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Value(WAKE))
        elif self._sleeper is not None:
            self._rouse()

    def requeue_front(self, items: Iterable[Any]) -> None:
        """Put back, in order and ahead of everything, items that were taken but not handled
        (a thread actor's forwarded window). They were accepted once, so the bound is ignored."""
        items = list(items)
        if not items or self._closed:
            return
        queue = self._queue()
        queue.extendleft(reversed(items))
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Value(queue.popleft()))
        elif self._sleeper is not None:
            self._rouse()

    # -- lifecycle ------------------------------------------------------------------------
    def drain(self) -> list[Any]:
        """Take every queued item (a DROP restart); parked senders' items then move in."""
        items = list(self._items or ())
        if self._items is not None:
            self._items.clear()
        if self._senders:
            self._admit_senders()
        return items

    def close(self, reason: Any = None) -> list[Any]:
        """Refuse further messages; returns what was still queued so calls can be failed.
        Parked senders fail with ``ActorDeadError``, as a later ``put`` would."""
        self._closed = True
        self.closed_reason = reason
        self._sleeper = None  # the incarnation has ended already (``_Process._finish``)
        items = list(self._items or ())
        self._items = None
        senders = self._senders
        if senders:
            self._senders = None
            for task in senders:
                reschedule(
                    task, outcome.Error(ActorDeadError("the actor is not running", reason))
                )
        self.wake()
        return items

    def reopen(self) -> None:
        """Take messages again (a terminated child is being restarted)."""
        self._closed = False
        self.closed_reason = None
