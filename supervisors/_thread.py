"""pykka thread actors as supervised children, with the same exit-reason semantics.

Work that must block, or that runs another event loop (asyncio drivers), goes in a
``ThreadActor``: a ``pykka.ThreadingActor`` whose ``on_receive`` runs in its own thread. Under a
supervisor it gets a normal ``ActorRef``: messages land in the same bounded trio-side mailbox
as any actor's, and a small pump task forwards them to the thread, at most ``window`` at a time
(so the pykka inbox stays small and the mailbox bound holds). Replies and the thread's exit
come back through ``TrioToken.run_sync_soon``, which never blocks the thread.

Differences from a trio actor, because a thread cannot be cancelled:

* a kill (brutal kill, a shutdown timeout, the supervisor itself being cancelled) takes effect
  when the current message returns: the thread then stops without ``on_stop`` and the reason is
  ``KILLED``; the trio side waits for that (shielded), so no thread outlives its supervisor;
* an exception in ``on_receive`` crashes the actor (``Error``), as in OTP, even for a call (pykka
  would return it to the asker instead); the caller gets ``ActorDeadError``. pykka then runs
  ``on_failure``, not ``on_stop``;
* messages forwarded to the thread but not handled when it stops go back to the front of the
  mailbox, so ``KEEP`` loses nothing but the message that crashed.

This relies on pykka internals: ``Actor._actor_loop``, ``_actor_loop_setup``,
``_actor_loop_teardown``, ``_handle_receive``, ``_handle_failure`` and
``pykka._envelope.Envelope`` (pykka 4; guarded by
``tests/supervisors/test_thread.py::test_pykka_internals_we_rely_on``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import outcome
import pykka
import trio
from pykka._envelope import Envelope

from ._actor import EXITED, RUNNING, STARTING, _Call, _Cell, _Process, finish_incarnation
from ._mailbox import WAKE
from ._reasons import KILLED, NORMAL, Error, ExitReason

__all__ = ["ThreadActor"]


class _Envelope:
    """A mailbox item on its way to the thread: the message and the call to answer, if any."""

    __slots__ = ("body", "call")

    def __init__(self, body: Any, call: _Call | None) -> None:
        self.body, self.call = body, call


class _Wake:
    """Unblocks the thread's ``inbox.get()`` so it sees ``actor_stopped`` (a kill)."""

    __slots__ = ()


class ThreadActor(pykka.ThreadingActor):
    """A pykka ``ThreadingActor`` that a supervisor can run. Override ``on_receive`` (sync),
    and optionally ``on_start``/``on_stop`` (run in the actor's thread)."""

    #: Messages handed to the thread at once; the rest wait in the bounded mailbox.
    window: int = 16
    mailbox_size: int = 1000

    _bridge: ThreadProcess | None = None
    _crash: BaseException | None = None
    _leftovers: list[_Envelope] | None = None
    _thread: threading.Thread | None = None

    def start_inline(self) -> pykka.ActorRef[Any]:
        """``pykka.Actor.start`` for an instance that exists already (its supervisor made it)."""
        pykka.ActorRegistry.register(self.actor_ref)
        self._start_actor_loop()
        return self.actor_ref

    # -- pykka's loop, in the thread -------------------------------------------------------
    def _actor_loop(self) -> None:
        self._thread = threading.current_thread()
        try:
            super()._actor_loop()
        finally:
            # A kill sets actor_stopped without pykka's _stop: unregister here (idempotent).
            pykka.ActorRegistry.unregister(self.actor_ref)
            bridge = self._bridge
            if bridge is not None:
                bridge.post(bridge.thread_exited, self._crash, self._leftovers or [])

    def _actor_loop_setup(self) -> None:
        super()._actor_loop_setup()  # on_start; a failure goes through _handle_failure
        bridge = self._bridge
        if bridge is not None and self._crash is None:
            bridge.post(bridge.thread_started)

    def _actor_loop_teardown(self) -> None:
        # Keep our unhandled envelopes (they go back to the mailbox); pykka fails the rest.
        inbox = self.actor_inbox
        ours: list[_Envelope] = []
        others = []
        while not inbox.empty():
            envelope = inbox.get()
            if type(envelope.message) is _Envelope:
                ours.append(envelope.message)
            elif type(envelope.message) is not _Wake:
                others.append(envelope)
        for envelope in others:
            inbox.put(envelope)
        self._leftovers = ours
        super()._actor_loop_teardown()

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # pykka calls this for on_start, on_receive (tell), on_stop and on_failure errors.
        if self._crash is None:
            self._crash = exception_value
        super()._handle_failure(exception_type, exception_value, traceback)

    def _handle_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is _Wake:
            return None
        if kind is not _Envelope:
            return super()._handle_receive(message)
        bridge = self._bridge
        assert bridge is not None
        try:
            result = self.on_receive(message.body)
        except Exception as e:
            bridge.post(bridge.handled, message.call, None, Error(e))
            raise  # pykka: _handle_failure, on_failure, the loop ends
        bridge.post(bridge.handled, message.call, result, None)
        return None


class ThreadProcess(_Process):
    """One incarnation of a ``ThreadActor`` under a supervisor: a pump task and a thread."""

    __slots__ = (
        "_in_flight",
        "_leftovers",
        "_pump_scope",
        "_pykka_ref",
        "_thread_crash",
        "_thread_exited",
        "_token",
        "_window",
    )
    kind_name = "thread"

    def __init__(
        self, cell: _Cell, actor: ThreadActor, nursery: trio.Nursery, on_exit: Any
    ) -> None:
        super().__init__(cell, actor, nursery, on_exit)
        self._token = trio.lowlevel.current_trio_token()
        self.started = trio.Event()
        self.exited = trio.Event()
        self._thread_exited = trio.Event()
        self._pump_scope = trio.CancelScope()
        self._window = trio.Semaphore(max(1, actor.window))
        self._in_flight: set[_Call] = set()
        self._pykka_ref: pykka.ActorRef[Any] | None = None
        self._thread_crash: BaseException | None = None
        self._leftovers: list[_Envelope] = []
        actor._bridge = self

    # -- called from the thread (through run_sync_soon) ----------------------------------
    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    def thread_started(self) -> None:
        if self.state == STARTING:
            self.state = RUNNING
        self.ran = True
        assert self.started is not None
        self.started.set()

    def handled(self, call: _Call | None, result: Any, crash: ExitReason | None) -> None:
        self._window.release()
        if call is not None:
            self._in_flight.discard(call)
            if crash is None:
                call.resolve(outcome.Value(result))
            else:
                call.fail(crash)

    def thread_exited(self, crash: BaseException | None, leftovers: list[_Envelope]) -> None:
        self._thread_crash = crash
        self._leftovers = leftovers
        self._thread_exited.set()

    # -- requests from outside ----------------------------------------------------------
    def request_stop(self, reason: ExitReason) -> None:
        if self.state == EXITED or self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.cell.mailbox.wake()  # the pump stops forwarding
        if self._pykka_ref is not None:
            # Queued behind the forwarded window: those messages are handled first.
            self._pykka_ref.stop(block=False)

    def crash(self, reason: ExitReason) -> None:
        # A thread cannot be interrupted: a crash (an exit signal) is a stop with that reason.
        if self.state == EXITED:
            return
        if self.crash_reason is None:
            self.crash_reason = reason
        self.request_stop(reason)

    def kill(self, reason: ExitReason = KILLED) -> None:
        if self.state == EXITED:
            return
        if self.forced_reason is None:
            self.forced_reason = reason
        self._pump_scope.cancel()
        if self._pykka_ref is not None:
            self._stop_thread_now()

    def _stop_thread_now(self) -> None:
        # pykka checks actor_stopped between messages: set it first, then wake an idle thread
        # (straight into the inbox: tell() refuses a stopped actor).
        self.actor.actor_stopped.set()
        self.actor.actor_inbox.put(Envelope(_Wake()))

    # -- the task body ------------------------------------------------------------------
    async def run(self) -> ExitReason:
        reason: ExitReason = KILLED
        try:
            try:
                self._pykka_ref = self.actor.start_inline()
            except Exception as e:
                reason = Error(e)
                return reason
            if self.forced_reason is not None:
                self._stop_thread_now()
            elif self.stop_reason is not None:
                self._pykka_ref.stop(block=False)
            reason = await self._supervise()
            return reason
        finally:
            self._finish(reason)

    async def _supervise(self) -> ExitReason:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump)
            try:
                await self._thread_exited.wait()
            except trio.Cancelled:
                # Our task is cancelled (the supervisor was killed): the thread must still end
                # before we do, or it would be an orphan.
                self.kill(KILLED)
                with trio.CancelScope(shield=True):
                    await self._thread_exited.wait()
                raise
            finally:
                self._pump_scope.cancel()
        if self.forced_reason is not None:
            return self.forced_reason
        if self._thread_crash is not None:
            return Error(self._thread_crash)
        if self.crash_reason is not None:
            return self.crash_reason
        if self.stop_reason is not None:
            return self.stop_reason
        return NORMAL

    async def _pump(self) -> None:
        mailbox = self.cell.mailbox
        inbox = self.actor.actor_inbox
        in_flight = self._in_flight
        window = self._window
        with self._pump_scope:
            assert self.started is not None
            await self.started.wait()
            while self.stop_reason is None:
                await window.acquire()
                message = await mailbox.get()
                if message is WAKE:
                    window.release()
                    continue
                if type(message) is _Call:
                    in_flight.add(message)
                    inbox.put(Envelope(_Envelope(message.message, message)))
                else:
                    inbox.put(Envelope(_Envelope(message, None)))

    def _finish(self, reason: ExitReason) -> None:
        if self.forced_reason is not None:
            reason = self.forced_reason
        self.state = EXITED
        self.reason = reason
        # Forwarded but never handled: back to the front of the mailbox, in order. The thread
        # is gone, so what is still in its inbox (a put that raced its teardown) is ours too.
        leftovers = list(self._leftovers)
        inbox = self.actor.actor_inbox
        if not self.actor.actor_stopped.is_set():
            self.actor.actor_stopped.set()  # the thread never ran: make tell() refuse
        while not inbox.empty():
            envelope = inbox.get_nowait()
            if type(envelope.message) is _Envelope:
                leftovers.append(envelope.message)
        requeue = []
        for item in leftovers:
            if item.call is not None:
                self._in_flight.discard(item.call)
                requeue.append(item.call)
            else:
                requeue.append(item.body)
        self.cell.mailbox.requeue_front(requeue)
        for call in self._in_flight:
            call.fail(reason)
        self._in_flight.clear()
        # The thread's last act was to tell us it exited; let it finish returning, so that
        # once the supervisor is gone no thread of its is in threading.enumerate() (a wait of
        # microseconds, bounded all the same).
        thread = self.actor._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        finish_incarnation(self, reason)
