"""Actors as trio tasks: the ``Actor`` callbacks, the ``ActorRef`` handle, links and monitors.

An actor's identity (its ``_Cell``: mailbox and ref) is apart from each *incarnation*
(``_Process``: the running task, its links, monitors and side tasks). A supervisor restarts a
child by running a new incarnation on the same cell, so the ref stays valid and the mailbox can
be kept (see ``ChildSpec.mailbox``).

Every incarnation behaves like an OTP ``gen_server`` that traps exits: a stop request lets the
current message finish and then runs ``on_stop``; a kill cancels the task at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._errors import ActorDeadError, CallTimeout, MailboxFull
from ._mailbox import WAKE, Mailbox
from ._reasons import KILLED, NORMAL, SHUTDOWN, Error, ExitReason

__all__ = [
    "Actor",
    "ActorRef",
    "Down",
    "Exit",
    "ExitSignal",
    "Monitor",
    "Reply",
    "spawn",
    "spawn_started",
]

STARTING, RUNNING, STOPPING, EXITED = "starting", "running", "stopping", "exited"


class Exit(Exception):
    """Raise inside an actor to exit with exactly ``reason`` (Erlang's ``exit(Reason)``)."""

    def __init__(self, reason: ExitReason) -> None:
        super().__init__(reason)
        self.reason = reason


class Down:
    """Delivered to a monitoring actor when the watched incarnation exits."""

    __slots__ = ("monitor", "reason", "ref")

    def __init__(self, ref: ActorRef, reason: ExitReason, monitor: Monitor) -> None:
        self.ref, self.reason, self.monitor = ref, reason, monitor

    def __repr__(self) -> str:
        return f"Down({self.ref!r}, {self.reason!r})"


class ExitSignal:
    """Delivered to a linked actor with ``trap_exits = True`` when its peer exits."""

    __slots__ = ("reason", "ref")

    def __init__(self, ref: ActorRef, reason: ExitReason) -> None:
        self.ref, self.reason = ref, reason

    def __repr__(self) -> str:
        return f"ExitSignal({self.ref!r}, {self.reason!r})"


class Monitor:
    __slots__ = ("_target", "_watcher", "ref")

    def __init__(self, ref: ActorRef, target: _Process | None, watcher: _Process) -> None:
        self.ref, self._target, self._watcher = ref, target, watcher


class _Call:
    """A request waiting for its reply. The caller parks on it; whoever answers reschedules."""

    __slots__ = ("message", "result", "task")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.task: Task | None = None
        self.result: outcome.Outcome | None = None

    def resolve(self, result: outcome.Outcome) -> bool:
        if self.result is not None:
            return False
        self.result = result
        task = self.task
        if task is not None:
            self.task = None
            reschedule(task, result)
        return True

    def fail(
        self, reason: ExitReason | None, what: str = "the actor exited before replying"
    ) -> None:
        self.resolve(outcome.Error(ActorDeadError(what, reason)))

    async def wait(self) -> Any:
        if self.result is not None:
            await trio.lowlevel.checkpoint()
            return self.result.unwrap()
        self.task = current_task()

        def abort(_: Any) -> Abort:
            self.task = None
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)


class Reply:
    """A call's answer, given later: ``reply.send(value)`` or ``reply.fail(exception)``."""

    __slots__ = ("_call", "_proc")

    def __init__(self, call: _Call, proc: _Process) -> None:
        self._call, self._proc = call, proc

    def send(self, value: Any = None) -> None:
        self._proc.deferred.discard(self._call)
        self._call.resolve(outcome.Value(value))

    def fail(self, exception: BaseException) -> None:
        self._proc.deferred.discard(self._call)
        self._call.resolve(outcome.Error(exception))


def fail_calls(items: list[Any], reason: ExitReason | None, what: str) -> None:
    for item in items:
        if type(item) is _Call:
            item.fail(reason, what)


class _Cell:
    """The lasting identity behind a ref: its mailbox, its name and its current incarnation."""

    __slots__ = (
        "final_reason",
        "finished",
        "kind",
        "mailbox",
        "name",
        "process",
        "ref",
        "restarts",
    )

    def __init__(self, name: str | None, capacity: int, kind: str = "worker") -> None:
        self.name = name
        self.kind = kind
        self.mailbox = Mailbox(capacity)
        self.process: Any = None
        self.final_reason: ExitReason | None = None
        self.finished: trio.Event | None = None
        self.restarts = 0
        self.ref = ActorRef(self)

    def close(self, reason: ExitReason) -> None:
        """The cell will never run again: refuse mail, fail queued calls, wake ``wait()``."""
        if self.final_reason is not None:
            return
        self.final_reason = reason
        fail_calls(self.mailbox.close(reason), reason, "the actor is gone")
        if self.finished is not None:
            self.finished.set()


class ActorRef:
    """The handle to an actor: cast, call, liveness. Refs compare by identity of the actor."""

    __slots__ = ("_cell",)

    def __init__(self, cell: _Cell) -> None:
        self._cell = cell

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.name or hex(id(self._cell))}>"

    @property
    def name(self) -> str | None:
        return self._cell.name

    def send_nowait(self, message: Any) -> None:
        """Cast. Raises ``MailboxFull`` at the bound and ``ActorDeadError`` once it is gone."""
        self._cell.mailbox.put_nowait(message)

    async def send(self, message: Any) -> None:
        """Cast, waiting for room in the mailbox."""
        await self._cell.mailbox.put(message)

    async def call(self, message: Any, timeout: float = 5.0) -> Any:
        """Ask and wait for the reply: a value, ``CallTimeout`` or ``ActorDeadError``."""
        request = _Call(message)
        mailbox = self._cell.mailbox
        with trio.move_on_after(timeout):
            try:
                mailbox.put_nowait(request)
            except MailboxFull:
                await mailbox.put(request)
            return await request.wait()
        raise CallTimeout(f"no reply from {self!r} within {timeout} s")

    def is_alive(self) -> bool:
        """True while the actor takes messages (also while its supervisor restarts it)."""
        return not self._cell.mailbox.closed

    def mailbox_depth(self) -> int:
        return len(self._cell.mailbox)

    async def wait(self) -> ExitReason:
        """Wait until the actor is gone for good; returns its last exit reason."""
        cell = self._cell
        if cell.final_reason is None:
            if cell.finished is None:
                cell.finished = trio.Event()
            await cell.finished.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert cell.final_reason is not None
        return cell.final_reason

    def stop(self, reason: ExitReason = SHUTDOWN) -> None:
        """Ask the current incarnation to stop after its current message (runs ``on_stop``)."""
        proc = self._cell.process
        if proc is not None:
            proc.request_stop(reason)

    def kill(self, reason: ExitReason = KILLED) -> None:
        """Cancel the current incarnation now; ``on_stop`` does not run."""
        proc = self._cell.process
        if proc is not None:
            proc.kill(reason)


class Actor:
    """Subclass and override ``receive`` (and optionally ``on_start``/``on_stop``).

    ``receive``'s return value is the reply to a ``call``; it is ignored for a cast.
    """

    mailbox_size: ClassVar[int] = 1000
    trap_exits: ClassVar[bool] = False
    _proc: _Process

    @property
    def ref(self) -> ActorRef:
        return self._proc.cell.ref

    async def on_start(self) -> None:
        """Runs before the first message. Raising here means the start failed."""

    async def receive(self, message: Any) -> Any:
        """Handle one message. Raising crashes the actor with ``Error(exception)``."""
        return None

    async def on_stop(self, reason: ExitReason) -> None:
        """Runs when the actor stops for any reason but ``KILLED``."""

    # -- helpers for use inside the actor ------------------------------------------------------
    def stop(self, reason: ExitReason = NORMAL) -> None:
        """Stop after the current message; ``on_stop(reason)`` then runs."""
        self._proc.request_stop(reason)

    def start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` beside the mailbox loop; it is cancelled when the actor exits, and
        if it raises, the actor exits with ``Error``."""
        self._proc.start_side_task(fn, args)

    def defer_reply(self) -> Reply:
        """Inside ``receive`` for a call: answer later through the returned ``Reply``."""
        proc = self._proc
        call = proc.current_call
        if call is None:
            raise RuntimeError("defer_reply() outside the handling of a call")
        proc.current_call = None
        proc.deferred.add(call)
        return Reply(call, proc)

    def link(self, ref: ActorRef) -> None:
        other = ref._cell.process
        if other is None or other.state == EXITED:
            raise ActorDeadError(f"cannot link to {ref!r}: not running", ref._cell.final_reason)
        self._proc.links.add(other)
        other.links.add(self._proc)

    def unlink(self, ref: ActorRef) -> None:
        other = ref._cell.process
        self._proc.links.discard(other)
        if other is not None:
            other.links.discard(self._proc)

    def monitor(self, ref: ActorRef) -> Monitor:
        target = ref._cell.process
        mon = Monitor(ref, target, self._proc)
        if target is None or target.state == EXITED:
            reason = ref._cell.final_reason or KILLED
            self._proc.cell.mailbox.put_signal(Down(ref, reason, mon))
        else:
            target.watchers.add(mon)
        return mon

    def demonitor(self, monitor: Monitor) -> None:
        if monitor._target is not None:
            monitor._target.watchers.discard(monitor)


_BASE_ON_START = Actor.on_start


class _Process:
    """One incarnation of an actor: the task that runs it and everything tied to its life."""

    __slots__ = (
        "actor",
        "cell",
        "current_call",
        "deferred",
        "exited",
        "forced_reason",
        "kill_scope",
        "links",
        "nursery",
        "on_exit",
        "reason",
        "side_scopes",
        "started",
        "state",
        "stop_reason",
        "tag",
        "watchers",
    )

    def __init__(
        self,
        cell: _Cell,
        actor: Any,
        nursery: trio.Nursery,
        on_exit: Callable[[_Process, ExitReason], None] | None = None,
        tag: Any = None,
    ) -> None:
        self.cell = cell
        self.actor = actor
        self.nursery = nursery
        self.on_exit = on_exit
        self.tag = tag
        self.state = STARTING
        self.stop_reason: ExitReason | None = None
        self.forced_reason: ExitReason | None = None
        self.reason: ExitReason | None = None
        self.kill_scope: trio.CancelScope | None = None
        self.current_call: _Call | None = None
        self.deferred: set[_Call] = set()
        self.links: set[_Process] = set()
        self.watchers: set[Monitor] = set()
        self.side_scopes: set[trio.CancelScope] = set()
        self.started: trio.Event | None = None
        self.exited: trio.Event | None = None
        actor._proc = self

    # -- requests from outside ------------------------------------------------------------
    def request_stop(self, reason: ExitReason) -> None:
        if self.state == EXITED or self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.cell.mailbox.wake()

    def kill(self, reason: ExitReason = KILLED) -> None:
        if self.state == EXITED:
            return
        if self.forced_reason is None:
            self.forced_reason = reason
        if self.kill_scope is not None:
            self.kill_scope.cancel()

    def exit_signal(self, source: ActorRef, reason: ExitReason) -> None:
        """A linked incarnation exited (Erlang semantics: ``normal`` is ignored unless trapped)."""
        if self.state == EXITED:
            return
        if self.actor.trap_exits:
            self.cell.mailbox.put_signal(ExitSignal(source, reason))
        elif reason != NORMAL:
            self.kill(reason)

    async def wait_started(self) -> ExitReason | None:
        """None once running; the exit reason if the start failed."""
        if self.state == STARTING:
            if self.started is None:
                self.started = trio.Event()
            await self.started.wait()
        return None if self.state in (RUNNING, STOPPING) or self.reason is None else self.reason

    async def wait_exited(self) -> ExitReason:
        if self.state != EXITED:
            if self.exited is None:
                self.exited = trio.Event()
            await self.exited.wait()
        assert self.reason is not None
        return self.reason

    def needs_start_wait(self) -> bool:
        return type(self.actor).on_start is not _BASE_ON_START

    # -- side tasks -----------------------------------------------------------------------
    def start_side_task(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        if self.state == EXITED:
            raise ActorDeadError("the actor has exited", self.reason)
        scope = trio.CancelScope()
        self.side_scopes.add(scope)
        self.nursery.start_soon(self._side, scope, fn, args)

    async def _side(self, scope: trio.CancelScope, fn: Callable[..., Any], args: tuple) -> None:
        try:
            with scope:
                await fn(*args)
        except Exit as e:
            self.kill(e.reason)
        except Exception as e:
            self.kill(Error(e))
        finally:
            self.side_scopes.discard(scope)


async def run_process(proc: _Process) -> None:
    """The task body of one incarnation."""
    reason: ExitReason = KILLED
    try:
        reason = await _run(proc)
    finally:
        _finish(proc, reason)


async def _run(proc: _Process) -> ExitReason:
    actor = proc.actor
    reason: ExitReason = NORMAL
    with trio.CancelScope() as scope:
        proc.kill_scope = scope
        if proc.forced_reason is not None:
            scope.cancel()
        hosts = getattr(actor, "hosts_children", False)
        if hosts:
            async with trio.open_nursery() as nursery:
                actor._children_nursery = nursery
                reason = await _lifecycle(proc)
        else:
            reason = await _lifecycle(proc)
    # A kill (or a crashed side task) overrides whatever the lifecycle returned.
    return proc.forced_reason if proc.forced_reason is not None else reason


async def _lifecycle(proc: _Process) -> ExitReason:
    actor = proc.actor
    try:
        await actor.on_start()
    except Exit as e:
        return e.reason
    except Exception as e:
        return Error(e)
    proc.state = RUNNING
    if proc.started is not None:
        proc.started.set()
    reason = await _loop(proc)
    proc.state = STOPPING
    try:
        await actor.on_stop(reason)
    except Exit as e:
        reason = e.reason
    except Exception as e:
        reason = Error(e)
    return reason


async def _loop(proc: _Process) -> ExitReason:
    receive = proc.actor.receive
    mailbox = proc.cell.mailbox
    while proc.stop_reason is None:
        message = await mailbox.get()
        kind = type(message)
        if kind is _Call:
            proc.current_call = message
            try:
                result = await receive(message.message)
            except Exit as e:
                message.fail(e.reason)
                proc.current_call = None
                return e.reason
            except Exception as e:
                reason = Error(e)
                message.fail(reason)
                proc.current_call = None
                return reason
            if proc.current_call is message:
                proc.current_call = None
                message.resolve(outcome.Value(result))
        elif message is WAKE:
            continue
        else:
            try:
                await receive(message)
            except Exit as e:
                return e.reason
            except Exception as e:
                return Error(e)
    return proc.stop_reason


def _finish(proc: _Process, reason: ExitReason) -> None:
    """Bookkeeping when an incarnation ends: fail its calls, signal links and monitors."""
    if proc.forced_reason is not None and reason != proc.forced_reason:
        reason = proc.forced_reason
    proc.state = EXITED
    proc.reason = reason
    cell = proc.cell
    if cell.process is proc:
        cell.process = None
    if proc.current_call is not None:
        proc.current_call.fail(reason)
        proc.current_call = None
    for call in proc.deferred:
        call.fail(reason)
    proc.deferred.clear()
    for scope in proc.side_scopes:
        scope.cancel()
    ref = cell.ref
    for other in proc.links:
        other.links.discard(proc)
        other.exit_signal(ref, reason)
    proc.links.clear()
    for mon in proc.watchers:
        watcher = mon._watcher
        if watcher.state != EXITED:
            watcher.cell.mailbox.put_signal(Down(ref, reason, mon))
    proc.watchers.clear()
    if proc.started is not None:
        proc.started.set()
    if proc.exited is not None:
        proc.exited.set()
    if proc.on_exit is not None:
        proc.on_exit(proc, reason)
    else:
        cell.close(reason)


def spawn(
    nursery: trio.Nursery, actor: Actor, *, name: str | None = None, mailbox_size: int | None = None
) -> ActorRef:
    """Run ``actor`` as an unsupervised task in ``nursery``; returns at once."""
    cell = _Cell(name, mailbox_size or actor.mailbox_size)
    proc = _Process(cell, actor, nursery)
    cell.process = proc
    nursery.start_soon(run_process, proc, name=name or type(actor).__name__)
    return cell.ref


async def spawn_started(
    nursery: trio.Nursery, actor: Actor, *, name: str | None = None, mailbox_size: int | None = None
) -> ActorRef:
    """Like ``spawn`` but returns after ``on_start``; raises ``ActorDeadError`` if it failed."""
    ref = spawn(nursery, actor, name=name, mailbox_size=mailbox_size)
    failed = await actor._proc.wait_started()
    if failed is not None:
        raise ActorDeadError(f"{ref!r} failed to start: {failed!r}", failed)
    return ref
