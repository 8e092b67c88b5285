"""pykka thread actors as supervised children, with the same exit-reason semantics.

Work that must block, or that runs another event loop (asyncio drivers), goes in a
``ThreadActor``: a ``pykka.ThreadingActor`` whose ``on_receive`` runs in its own thread. Under a
supervisor it gets a normal ``ActorRef``: messages land in the same bounded trio-side mailbox
as any actor's, and a small pump task forwards them to the thread, at most ``window`` at a time
(so the pykka inbox stays small and the mailbox bound holds). Replies and the thread's exit
come back through ``TrioToken.run_sync_soon``, which never blocks the thread.

Differences from a trio actor, because a thread cannot be cancelled:

* a kill (brutal kill, or a shutdown timeout) takes effect when the current message returns:
  the thread then stops without ``on_stop`` and the reason is ``KILLED``;
* an exception in ``on_receive`` crashes the actor (``Error``), as in OTP, even for a call (pykka
  would return it to the asker instead); the caller gets ``ActorDeadError``.

This relies on two pykka internals, ``Actor._actor_loop`` and ``Actor._handle_receive``
(pinned by ``pykka>=4.1,<5``; guarded by ``tests/supervisors/test_thread.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import outcome
import pykka
import trio

from ._actor import EXITED, RUNNING, STARTING, STOPPING, _Call, _Cell
from ._mailbox import WAKE
from ._reasons import KILLED, NORMAL, Error, ExitReason

__all__ = ["ThreadActor"]


class _Envelope:
    __slots__ = ("call", "message")

    def __init__(self, message: Any, call: _Call | None) -> None:
        self.message, self.call = message, call


class _Wake:
    __slots__ = ()


class ThreadActor(pykka.ThreadingActor):
    """A pykka ``ThreadingActor`` that a supervisor can run. Override ``on_receive`` (sync),
    and optionally ``on_start``/``on_stop`` (run in the actor's thread)."""

    #: Messages handed to the thread at once; the rest wait in the bounded mailbox.
    window: int = 16
    mailbox_size: int = 1000

    _bridge: ThreadProcess | None = None
    _crash: BaseException | None = None

    def start_inline(self) -> pykka.ActorRef[Any]:
        """``pykka.Actor.start`` for an instance that exists already (its supervisor made it)."""
        pykka.ActorRegistry.register(self.actor_ref)
        self._start_actor_loop()
        return self.actor_ref

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        finally:
            bridge = self._bridge
            if bridge is not None:
                bridge.thread_exited(self._crash)

    def _actor_loop_setup(self) -> None:
        try:
            self.on_start()
        except Exception as e:
            self._crash = e
            self._handle_failure(type(e), e, e.__traceback__)
            return
        bridge = self._bridge
        if bridge is not None:
            bridge.post(bridge.thread_started)

    def _handle_receive(self, message: Any) -> Any:
        if type(message) is _Wake:
            return None
        if type(message) is not _Envelope:
            return super()._handle_receive(message)
        bridge = self._bridge
        call = message.call
        try:
            result = self.on_receive(message.message)
        except Exception as e:
            self._crash = e
            if call is not None and bridge is not None:
                bridge.post(call.fail, Error(e))
            raise
        finally:
            if bridge is not None:
                bridge.post(bridge.window_released)
        if call is not None and bridge is not None:
            bridge.post(call.resolve, outcome.Value(result))
        return None


class ThreadProcess:
    """One incarnation of a ``ThreadActor`` under a supervisor: a pump task and a thread."""

    kind_name = "thread"

    def __init__(self, cell: _Cell, actor: ThreadActor, nursery: trio.Nursery, on_exit: Any):
        self.cell = cell
        self.actor = actor
        self.nursery = nursery
        self.on_exit = on_exit
        self.tag: Any = None
        self.state = STARTING
        self.reason: ExitReason | None = None
        self.stop_reason: ExitReason | None = None
        self.forced_reason: ExitReason | None = None
        self._token = trio.lowlevel.current_trio_token()
        self._started = trio.Event()
        self._exited = trio.Event()
        self._done = trio.Event()
        self._pump_scope = trio.CancelScope()
        self._slots = trio.Semaphore(max(1, actor.window))
        self._in_flight: set[_Call] = set()
        self._pykka_ref: pykka.ActorRef[Any] | None = None
        self._thread_crash: BaseException | None = None
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
        self._started.set()

    def window_released(self) -> None:
        self._slots.release()

    def thread_exited(self, crash: BaseException | None) -> None:
        self.post(self._thread_exited, crash)

    def _thread_exited(self, crash: BaseException | None) -> None:
        self._thread_crash = crash
        self._exited.set()

    # -- the supervisor's interface ----------------------------------------------------------
    def needs_start_wait(self) -> bool:
        return True

    async def wait_started(self) -> ExitReason | None:
        await self._started.wait()
        return None if self.state in (RUNNING, STOPPING) else self.reason

    async def wait_exited(self) -> ExitReason:
        while self.state != EXITED:
            await self._done.wait()
        assert self.reason is not None
        return self.reason

    def request_stop(self, reason: ExitReason) -> None:
        if self.state == EXITED or self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.state = STOPPING if self.state == RUNNING else self.state
        self.cell.mailbox.wake()
        if self._pykka_ref is not None:
            self._pykka_ref.stop(block=False)

    def kill(self, reason: ExitReason = KILLED) -> None:
        if self.state == EXITED:
            return
        if self.forced_reason is None:
            self.forced_reason = reason
        self._pump_scope.cancel()
        # The thread cannot be interrupted: wake it if idle, and make its loop end after the
        # current message without on_stop (pykka checks actor_stopped between messages).
        if self._pykka_ref is not None:
            try:
                self._pykka_ref.tell(_Wake())
            except pykka.ActorDeadError:
                pass
        self.actor.actor_stopped.set()

    async def run(self) -> None:
        reason: ExitReason = KILLED
        try:
            self._pykka_ref = self.actor.start_inline()
            reason = await self._supervise()
        finally:
            self._finish(reason)

    async def _supervise(self) -> ExitReason:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump)
            try:
                with trio.CancelScope(shield=True):
                    await self._exited.wait()
            finally:
                self._pump_scope.cancel()
        if self.forced_reason is not None:
            return self.forced_reason
        if self._thread_crash is not None:
            return Error(self._thread_crash)
        if self.stop_reason is not None:
            return self.stop_reason
        return NORMAL

    async def _pump(self) -> None:
        mailbox = self.cell.mailbox
        with self._pump_scope:
            await self._started.wait()
            while self.stop_reason is None:
                await self._slots.acquire()
                message = await mailbox.get()
                if message is WAKE:
                    self._slots.release()
                    continue
                call = message if type(message) is _Call else None
                if call is not None:
                    self._in_flight.add(call)
                    body = call.message
                else:
                    body = message
                assert self._pykka_ref is not None
                try:
                    self._pykka_ref.tell(_Envelope(body, call))
                except pykka.ActorDeadError:
                    if call is not None:
                        call.fail(None, "the thread actor stopped")
                    return

    def _finish(self, reason: ExitReason) -> None:
        self.state = EXITED
        self.reason = reason
        if self.cell.process is self:
            self.cell.process = None
        for call in self._in_flight:
            call.fail(reason)
        self._in_flight.clear()
        self._started.set()
        self._done.set()
        if self.on_exit is not None:
            self.on_exit(self, reason)
        else:
            self.cell.close(reason)
