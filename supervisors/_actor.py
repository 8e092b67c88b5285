"""Actors as trio tasks: the ``Actor`` callbacks, the ``ActorRef`` handle, links and monitors.

An actor's identity (its ``_Cell``: mailbox and ref) is apart from each *incarnation*
(``_Process``: the running task, its links, monitors and side tasks). A supervisor restarts a
child by running a new incarnation on the same cell, so the ref stays valid and the mailbox can
be kept (see ``ChildSpec.mailbox``).

An incarnation ends in one of three ways, and they differ in whether ``on_stop`` runs:

* a *stop* (``ref.stop()``, ``self.stop()``, a supervisor's shutdown) lets the current message
  finish, then runs ``on_stop(reason)``;
* a *crash* (``receive``/``on_start`` raised, a side task raised, an exit signal from a link)
  cancels ``on_start``/the message loop at once, then runs ``on_stop(reason)``;
* a *kill* (``ref.kill()``, brutal kill, a shutdown timeout, a ``KILLED`` exit signal) cancels
  everything, ``on_stop`` included.

One cancel scope per phase does it (``_Process.scope``): the *work* scope around ``on_start``
and the message loop (cancelled by a crash or a kill), then, only if ``on_stop`` is overridden,
a *stop* scope around it (cancelled by a kill only). A supervisor also cancels its children's
nursery on a kill. Guarded by ``tests/supervisors/test_actor.py::test_kill_vs_stop*``.

A cancel scope is the dearest thing an idle actor would own (a fifth of the time to spawn one,
and four GC-tracked objects where it otherwise has fifteen: spawning 100,000 actors is mostly
GC), so none is made before it is needed: a default ``on_stop`` gets none, and an actor
without ``on_start`` waits for its first message outside any scope (in ``_Process.run``); a
kill or crash then wakes it directly (``_Interrupt``). Guarded by
``tests/supervisors/test_actor.py::test_idle_*``.

An idle actor can also give its task up altogether: Erlang's *hibernation*. ``ref.hibernate()``
(say, from a periodic sweep of a supervisor's children, ``SupervisorRef.hibernate_idle``) ends
the task of an incarnation parked on an empty mailbox, with its frames and cancel scope; the
incarnation itself goes on (same ref, mailbox, links, monitors, side tasks, supervision, state
``running``). Whatever would have woken the parked task (a message, a signal, a stop, a kill,
a crash: ``Mailbox._rouse`` and ``_Process._interrupt_idle_wait``) runs it again in a fresh
task in the same nursery and context, entering the loop as after ``on_start`` (which does not
run again). Only supervised workers hibernate: their supervisor's nursery outlives them, and a
supervisor that ends finishes its hibernated children (``_release_children``: links and
monitors then fire with ``KILLED``, as for a child cancelled with the nursery). Guarded by
``tests/supervisors/test_hibernate.py``. The actor can also ask for it itself,
``self.hibernate()`` (OTP's ``{noreply, State, hibernate}``): the loop then ends its task the
next time it would park on an empty mailbox, instead of parking.

Ending a hibernated incarnation needs a task only for what its ending awaits. A kill
finishes it at once (no ``on_stop``). A stop or a crash calls ``on_stop`` at once, in the
stopper's call and in the actor's context: ``on_stop`` may be a plain function, which
returns None when it has nothing to await (the incarnation then finishes there) or an
awaitable for the rest, and only that is run in a fresh task (an ``async def on_stop``
returns its coroutine unstarted: all of it runs there). A connection asleep between its login
and its logout then ends without a task start. Guarded by ``test_hibernate.py``.

A cast (``send_nowait``) to an idle actor may be handled without waking it at all: an actor
that overrides ``Actor.receive_now`` (a plain function) has it called at once, in the sender's
task, when it is parked on an empty mailbox or hibernated, running, not stopping and not in a
call; it returns False to decline (the message is then queued as usual). It is the
synchronous part of ``receive`` for messages that only update state (a connection attached to
a mailbox, or detached), and saves the task start that waking a hibernated actor costs. Erlang
has no such thing: a process's code only runs in the process; here it runs in the sender's
task but still one message at a time, in mailbox order (only an empty mailbox qualifies), and
a raise crashes the actor as ``receive`` raising would. Guarded by
``tests/supervisors/test_receive_now.py``.

``run_beside(ref, fn)`` runs a side task in the *calling* task rather than a task of its own (a
socket's reader in the server's handler task, which would otherwise only wait): cancelled when
the incarnation exits, and it crashes the incarnation if it raises, as ``start_task``. With
``scope=`` it is cancelled through a cancel scope the caller is in already, not one of its own.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import outcome
import trio
from trio.lowlevel import (
    Abort,
    Task,
    checkpoint,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

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
    "run_beside",
    "spawn",
    "spawn_started",
]

STARTING, RUNNING, STOPPING, EXITED = "starting", "running", "stopping", "exited"
_NOTHING: Any = object()
# The incarnations inside their ``receive_now`` now (nested: one may cast to another that is
# idle); a cast to one of them is queued instead. One trio thread runs them all, and a
# ``receive_now`` does not await, so a list is the whole bookkeeping.
_INLINE: list[Any] = []


class _Interrupt(BaseException):
    """Wakes an actor parked in its first, scope-less wait for a kill or a crash; never
    escapes ``_Process.run``."""


class _Hibernate(BaseException):
    """Ends the task of an incarnation parked on an empty mailbox (``_Process.hibernate``);
    never escapes ``_Process.run``."""


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
    """What ``Actor.monitor`` returns: pass it to ``demonitor``; ``Down.monitor`` is it."""

    __slots__ = ("_target", "_watcher", "ref")

    def __init__(self, ref: ActorRef, target: _Process | None, watcher: _Process) -> None:
        self.ref, self._target, self._watcher = ref, target, watcher

    def __repr__(self) -> str:
        return f"<Monitor of {self.ref!r}>"


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
        if self.result is None:
            self.resolve(outcome.Error(ActorDeadError(what, reason)))

    def wait(self) -> Awaitable[Any]:
        """Park until answered (parking is the checkpoint). A plain function returning the
        awaitable: one coroutine frame less on the hot path."""
        if self.result is not None:  # answered while the caller waited for room
            return _unwrap_after_checkpoint(self.result)
        self.task = current_task()
        return wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> Abort:
        # The caller gave up (timeout or cancel); a later reply is dropped.
        self.task = None
        return Abort.SUCCEEDED


async def _unwrap_after_checkpoint(result: outcome.Outcome) -> Any:
    await checkpoint()
    return result.unwrap()


class Reply:
    """A call's answer, given later: ``reply.send(value)`` or ``reply.fail(exception)``.

    Answering twice, or after the actor exited (the call then already failed with
    ``ActorDeadError``), does nothing."""

    __slots__ = ("_call", "_proc")

    def __init__(self, call: _Call, proc: _Process) -> None:
        self._call, self._proc = call, proc

    def send(self, value: Any = None) -> None:
        self._forget()
        self._call.resolve(outcome.Value(value))

    def fail(self, exception: BaseException) -> None:
        self._forget()
        self._call.resolve(outcome.Error(exception))

    def _forget(self) -> None:
        deferred = self._proc.deferred
        if deferred is not None:
            deferred.discard(self._call)


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

    def suspend(self, reason: ExitReason) -> None:
        """Not running and not being restarted (a terminated child spec): refuse mail and fail
        queued calls until a restart reopens the mailbox. ``ref.wait()`` keeps waiting."""
        if not self.mailbox.closed:
            fail_calls(self.mailbox.close(reason), reason, "the actor is not running")

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

    __slots__ = ("_cell", "_mailbox")

    def __init__(self, cell: _Cell) -> None:
        self._cell = cell
        self._mailbox = cell.mailbox  # one attribute hop less on the hot paths

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.name or hex(id(self._cell))}>"

    @property
    def name(self) -> str | None:
        return self._cell.name

    def send_nowait(self, message: Any) -> None:
        """Cast. Raises ``MailboxFull`` at the bound and ``ActorDeadError`` once it is gone.
        To an idle actor that defines ``receive_now``, that may take it at once, in the
        caller's task (see the module docstring)."""
        mailbox = self._mailbox
        if mailbox._receiver is not None or mailbox._sleeper is not None:
            proc = self._cell.process
            # (A thread actor's incarnation holds no ``Actor``: it never takes this path.)
            if (
                proc is not None
                and getattr(proc.actor, "_receives_now", False)
                and proc.receives_now(message)
            ):
                return
        mailbox.put_nowait(message)

    async def send(self, message: Any) -> None:
        """Cast, waiting for room in the mailbox."""
        await self._mailbox.put(message)

    async def call(self, message: Any, timeout: float | None = 5.0) -> Any:
        """Ask and wait for the reply: a value, ``CallTimeout`` or ``ActorDeadError``.

        ``timeout=None`` waits as long as the actor lives: the call still cannot hang, since it
        fails when the actor exits (``tests/supervisors/test_actor.py::test_call_resolves*``),
        and it is the quickest call: no cancel scope to enter.
        """
        request = _Call(message)
        mailbox = self._mailbox
        if timeout is None or timeout == math.inf:
            try:
                mailbox.put_nowait(request)
            except MailboxFull:
                await mailbox.put(request)
            return await request.wait()
        with trio.move_on_after(timeout):
            try:
                mailbox.put_nowait(request)
            except MailboxFull:
                await mailbox.put(request)
            return await request.wait()
        raise CallTimeout(f"no reply from {self!r} within {timeout} s")

    def is_alive(self) -> bool:
        """True while the actor takes messages (also while its supervisor restarts it)."""
        return not self._mailbox.closed

    def mailbox_depth(self) -> int:
        return len(self._mailbox)

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

    def hibernate(self) -> bool:
        """Erlang's hibernation, asked from outside: a supervised worker parked on an empty
        mailbox gives up its task (it lives on; the next message, stop, kill or exit signal
        runs it in a fresh one) and True is returned; otherwise nothing happens."""
        proc = self._cell.process
        return proc is not None and proc.hibernate()

    def is_hibernating(self) -> bool:
        proc = self._cell.process
        return proc is not None and proc.hibernated is True


class Actor:
    """Subclass and override ``receive`` (and optionally ``on_start``/``on_stop``).

    ``receive``'s return value is the reply to a ``call``; it is ignored for a cast.
    """

    mailbox_size: ClassVar[int] = 1000
    trap_exits: ClassVar[bool] = False
    #: OTP's ``{ok, State, hibernate}`` from ``init``: a supervised worker without
    #: ``on_start`` starts hibernated, with no task until its first message (or stop, kill,
    #: exit signal). Ignored where hibernation is (``ActorRef.hibernate``) and for an actor
    #: with ``on_start``, which its task runs.
    start_asleep: ClassVar[bool] = False
    #: Shown beside the id in ``snapshot()`` (say, which user a dynamic child serves: the
    #: children of a simple_one_for_one supervisor share their template's id).
    label: str | None = None
    #: A supervisor runs its children in a nursery inside its own task (``_supervisor``).
    _hosts_children: ClassVar[bool] = False
    #: Overrides ``receive_now`` (set by ``__init_subclass__``): what a cast checks.
    _receives_now: ClassVar[bool] = False
    _proc: _Process

    @property
    def ref(self) -> ActorRef:
        return self._proc.cell.ref

    async def on_start(self) -> None:
        """Runs before the first message. Raising here means the start failed."""

    async def receive(self, message: Any) -> Any:
        """Handle one message. Raising crashes the actor with ``Error(exception)``."""
        return None

    def receive_now(self, message: Any) -> bool:
        """The optional fast path of a cast (``ActorRef.send_nowait``) to this actor while it
        is idle: parked on an empty mailbox or hibernated, running, not stopping, no call
        under way. It runs in the *sender's* task and context, at once, so it cannot await.
        True: handled, as ``receive`` would have; False: declined, before doing anything,
        and the message is queued as usual. Raising ends the actor as in ``receive`` (``Exit``
        with its reason, any other exception with ``Error``).
        What it casts to itself is queued (and wakes it as any cast)."""
        return False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._receives_now = cls.receive_now is not Actor.receive_now

    def on_stop(self, reason: ExitReason) -> Awaitable[None] | None:
        """Runs when the actor stops for any reason but ``KILLED``: an ``async def``, or a
        plain ``def`` returning None or an awaitable that is then awaited (the part that must
        wait, if any). A hibernated actor whose ``on_stop`` returns None stops without a task
        of its own (see the module docstring)."""
        return None

    # -- helpers for use inside the actor ------------------------------------------------------
    def stop(self, reason: ExitReason = NORMAL) -> None:
        """Stop after the current message; ``on_stop(reason)`` then runs."""
        self._proc.request_stop(reason)

    def hibernate(self) -> None:
        """Erlang's ``{noreply, State, hibernate}``, asked by the actor itself (in ``receive``,
        ``on_start`` or a side task): once its mailbox is empty it gives up its task, as
        ``ActorRef.hibernate`` (at once if the loop is parked on an empty mailbox now, else
        the next time it would park; once: the next wake-up does not ask again). Ignored
        where ``ActorRef.hibernate`` would be (unsupervised, a supervisor, stopping)."""
        proc = self._proc
        if proc.hibernated is False and not proc.hibernate():
            proc.hibernated = None  # asked: ``_Process._loop``

    def start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` beside the mailbox loop; it is cancelled when the actor exits, and
        if it raises, the actor exits with ``Error`` (``on_stop`` runs)."""
        self._proc.start_side_task(fn, args)

    def defer_reply(self) -> Reply:
        """Inside ``receive`` for a call: answer later through the returned ``Reply``."""
        proc = self._proc
        call = proc.current_call
        if call is None:
            raise RuntimeError("defer_reply() outside the handling of a call")
        proc.current_call = None
        if proc.deferred is None:
            proc.deferred = set()
        proc.deferred.add(call)
        return Reply(call, proc)

    def link(self, ref: ActorRef) -> None:
        """Two-way: when either incarnation exits, the other gets the exit signal."""
        other = ref._cell.process
        if other is None or other.state == EXITED:
            raise ActorDeadError(f"cannot link to {ref!r}: not running", ref._cell.final_reason)
        me = self._proc
        if other is me:
            return
        me.add_link(other)
        other.add_link(me)

    def unlink(self, ref: ActorRef) -> None:
        other = ref._cell.process
        me = self._proc
        if me.links is not None:
            me.links.discard(other)
        if other is not None and other.links is not None:
            other.links.discard(me)

    def monitor(self, ref: ActorRef) -> Monitor:
        """One-way: a ``Down`` message when the watched incarnation exits (at once if it is
        not running)."""
        target = ref._cell.process
        mon = Monitor(ref, target, self._proc)
        if target is None or target.state == EXITED:
            reason = ref._cell.final_reason or ref._cell.mailbox.closed_reason or KILLED
            self._proc.cell.mailbox.put_signal(Down(ref, reason, mon))
        else:
            watchers = target.watchers
            if watchers is None:
                target.watchers = (mon,)
            elif type(watchers) is tuple:
                # A few watchers in a tuple (a set is ~200 bytes: a connection of an idle
                # user has two), a set once there are many (adding to a tuple copies it).
                if len(watchers) < WATCHERS_TUPLE:
                    target.watchers = (*watchers, mon)
                else:
                    target.watchers = {*watchers, mon}
            else:
                watchers.add(mon)
        return mon

    def demonitor(self, monitor: Monitor) -> None:
        target = monitor._target
        if target is None:
            return
        watchers = target.watchers
        if type(watchers) is tuple:
            if monitor in watchers:
                target.watchers = tuple(m for m in watchers if m is not monitor) or None
        elif watchers is not None:
            watchers.discard(monitor)


# The most watchers an incarnation keeps in a tuple (``Actor.monitor``).
WATCHERS_TUPLE = 8


_BASE_ON_START = Actor.on_start
_BASE_ON_STOP = Actor.on_stop


class _Process:
    """One incarnation of an actor: the task that runs it and everything tied to its life.

    The sets are created on first use: most actors never link, monitor or defer (memory per
    idle actor is one of the benchmark's goals, ``benchmarks/actors.py``)."""

    __slots__ = (
        "actor",
        "cell",
        "context",
        "crash_reason",
        "current_call",
        "deferred",
        "exited",
        "forced_reason",
        "hibernated",
        "host_scope",
        "links",
        "nursery",
        "on_exit",
        "ran",
        "reason",
        "scope",
        "side_scopes",
        "started",
        "state",
        "stop_reason",
        "tag",
        "watchers",
    )
    kind_name: ClassVar[str] = "worker"

    def __init__(
        self,
        cell: _Cell,
        actor: Any,
        nursery: trio.Nursery,
        on_exit: Callable[[Any, ExitReason], None] | None = None,
        tag: Any = None,
    ) -> None:
        self.cell = cell
        self.actor = actor
        self.nursery = nursery
        self.on_exit = on_exit
        self.tag = tag
        self.state = STARTING
        self.ran = False  # on_start finished: the start succeeded
        self.stop_reason: ExitReason | None = None
        self.forced_reason: ExitReason | None = None
        self.crash_reason: ExitReason | None = None
        self.reason: ExitReason | None = None
        self.scope: trio.CancelScope | None = None  # the current phase's: work, then stop
        self.host_scope: trio.CancelScope | None = None  # a supervisor's children nursery
        self.current_call: _Call | None = None
        self.deferred: set[_Call] | None = None
        self.links: set[_Process] | None = None
        self.watchers: tuple[Monitor, ...] | set[Monitor] | None = None
        # None when there are none (an idle actor whose side tasks ended keeps no empty
        # container), the scope itself when there is one (an idle connection's reader: no
        # list either), a list when there are more (an actor has few side tasks at once).
        self.side_scopes: trio.CancelScope | list[trio.CancelScope] | None = None
        self.started: trio.Event | None = None
        self.exited: trio.Event | None = None
        # True while hibernated; None while awake with a hibernation asked for by the actor
        # (``Actor.hibernate``: the loop hibernates the next time it would park), a third
        # state of this slot rather than a slot of its own (8 bytes more per actor would take
        # ``_Process`` to the next allocation size, 16 bytes more).
        self.hibernated: bool | None = False
        self.context: contextvars.Context | None = None  # the task's, while hibernated
        actor._proc = self

    # -- requests from outside ------------------------------------------------------------
    def receives_now(self, message: Any) -> bool:
        """``Actor.receive_now`` for a cast to this incarnation while it is idle (the caller
        has seen a parked receiver or a sleeper on its mailbox: it is empty). False, and the
        cast is queued, where it may not (not running, stopping, crashing, a call under way,
        or already inside its own ``receive_now``: a cast to itself from there is queued)
        or where it declines. Raising crashes the incarnation, as ``receive`` raising would:
        the message is then gone with it, as in OTP."""
        if not self.steady() or self.current_call is not None or self in _INLINE:
            return False
        _INLINE.append(self)
        try:
            return bool(self.actor.receive_now(message))
        except Exit as e:  # as from ``receive``: the incarnation ends with that reason
            self.crash(e.reason)
            return True
        except Exception as e:
            self.crash(Error(e))
            return True
        finally:
            _INLINE.pop()

    def request_stop(self, reason: ExitReason) -> None:
        if self.state == EXITED or self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self.hibernated is True:
            self._end_asleep(reason)
            return
        self.cell.mailbox.wake()

    def kill(self, reason: ExitReason = KILLED) -> None:
        if self.state == EXITED:
            return
        if self.forced_reason is None:
            self.forced_reason = reason
        if self.hibernated is True:  # no task to cancel, and no on_stop to run
            self._finish(self.forced_reason)
            return
        if self.scope is not None:
            self.scope.cancel()
        else:
            self._interrupt_idle_wait()
        if self.host_scope is not None:
            self.host_scope.cancel()

    def crash(self, reason: ExitReason) -> None:
        """End with ``reason`` now, but still run ``on_stop`` (the first crash wins)."""
        if self.state == EXITED:
            return
        if self.crash_reason is None:
            self.crash_reason = reason
        if self.hibernated is True:
            self._end_asleep(self.crash_reason)
        elif self.scope is None:
            self._interrupt_idle_wait()
        elif self.state != STOPPING:
            self.scope.cancel()  # the work scope; a crash lets on_stop run

    def _interrupt_idle_wait(self) -> None:
        # Parked in the first wait (running, no scope yet): the mailbox's receiver is our task.
        mailbox = self.cell.mailbox
        task = mailbox._receiver
        if self.state == RUNNING and task is not None:
            mailbox._receiver = None
            reschedule(task, outcome.Error(_Interrupt()))
        elif self.hibernated:
            self.resume()  # the fresh task sees the flags and ends as they say

    # -- hibernation ----------------------------------------------------------------------
    def steady(self) -> bool:
        """Running, with no stop, crash or kill under way."""
        return (
            self.state == RUNNING
            and self.stop_reason is None
            and self.crash_reason is None
            and self.forced_reason is None
        )

    def may_hibernate(self) -> bool:
        return self.steady() and not (
            self.hibernated
            or self.on_exit is None  # unsupervised: its nursery may close while it sleeps
            or not isinstance(self.actor, Actor)  # a thread actor: its thread waits
            or self.actor._hosts_children
        )

    def hibernate(self) -> bool:
        """End the task if it is parked on an empty mailbox, keeping the incarnation; False
        (and nothing done) otherwise. See the module docstring."""
        if not self.may_hibernate():
            return False
        mailbox = self.cell.mailbox
        task = mailbox._receiver
        if task is None or mailbox._items:
            return False
        mailbox._receiver = None
        self._fall_asleep(task)
        reschedule(task, outcome.Error(_Hibernate()))
        return True

    def _fall_asleep(self, task: Task) -> None:
        """The bookkeeping of hibernation; the caller then ends ``task`` with ``_Hibernate``
        (the loop raises it itself when asked to hibernate: ``_loop``)."""
        mailbox = self.cell.mailbox
        mailbox._items = None  # an empty deque is ~700 bytes; made again on the next message
        mailbox._sleeper = self
        self.hibernated = True
        self.scope = None  # the parked task's work scope ends with it
        context = task.context
        # Most tasks never set a context variable: their context holds what their
        # supervisor's does (children start in it), and the sleeper keeps that one instead
        # of a Context object of its own (64 bytes per sleeping actor). ``resume`` starts
        # the fresh task in a copy of it either way.
        home = getattr(getattr(self.on_exit, "__self__", None), "_context", None)
        if home is not None and _same_context(context, home):
            context = home
        self.context = context

    def sleep_from_start(self, context: contextvars.Context) -> bool:
        """Start asleep (``Actor.start_asleep``) instead of in a task: True if it did (it is
        running, hibernated, and ``context`` is the one its first task will copy); False,
        and nothing done, where it may not (the caller then starts its task)."""
        if type(self.actor).on_start is not _BASE_ON_START or self.cell.mailbox._items:
            return False
        self.state = RUNNING  # as ``may_hibernate`` wants it; undone below if it may not
        if not self.may_hibernate():
            self.state = STARTING
            return False
        self._started()
        self.hibernated = True
        self.context = context
        self.cell.mailbox._sleeper = self
        return True

    def resume(self) -> None:
        """Run the hibernated incarnation again, in a fresh task in its nursery and context."""
        self._start_in(self._wake(), self.run)

    def _wake(self) -> contextvars.Context:
        """Undo the bookkeeping of hibernation (``_fall_asleep``); the context it kept."""
        self.hibernated = False
        self.cell.mailbox._sleeper = None
        context, self.context = self.context, None
        assert context is not None
        return context

    def _start_in(self, context: contextvars.Context, fn: Callable[..., Any], *args: Any) -> None:
        """Start ``fn(*args)`` as this incarnation's task, in its nursery and ``context``."""
        name = self.cell.name or type(self.actor).__name__
        context.run(self.nursery.start_soon, fn, *args, name=name)

    def _end_asleep(self, reason: ExitReason) -> None:
        """Stop or crash a hibernated incarnation with ``reason``: ``on_stop`` is called
        here, in its context, and only an awaitable it returns gets a task (see the module
        docstring)."""
        # Awake for what follows: a message on_stop sends itself stays queued (as for an awake
        # actor), it does not start a task.
        context = self._wake()
        self.state = STOPPING
        pending, final = None, reason
        if type(self.actor).on_stop is not _BASE_ON_STOP:
            # A copy: the context may be the supervisor's, which starting a child enters.
            pending, final = context.copy().run(_call_on_stop, self.actor, reason)
        if pending is None:
            self._finish(final)
        else:
            self._start_in(context, self._stop_task, pending, final)

    async def _stop_task(self, pending: Awaitable[None], reason: ExitReason) -> None:
        """The task of what a hibernated incarnation's ``on_stop`` awaits (``_end_asleep``)."""
        final: ExitReason = KILLED  # if cancelled from outside
        try:
            final = await self._await_on_stop(pending, reason)
        finally:
            self._finish(final)

    async def _await_on_stop(self, pending: Awaitable[None], reason: ExitReason) -> ExitReason:
        """Await what ``on_stop`` returned, in the stop scope (cancelled by a kill only);
        the reason the incarnation ends with."""
        final = reason
        with trio.CancelScope() as stop:
            self.scope = stop
            if self.forced_reason is not None:  # killed before this task ran
                stop.cancel()
            try:
                await pending
            except Exit as e:
                final = e.reason
            except Exception as e:
                final = Error(e)
            else:
                # A side task that crashed during on_stop gives its reason. (Killed during
                # on_stop: _finish puts KILLED.)
                if self.crash_reason is not None:
                    final = self.crash_reason
        return final

    def exit_with(self, reason: ExitReason) -> None:
        """Exit with ``reason`` from outside the message loop: ``KILLED`` is a kill (no
        ``on_stop``), anything else a crash."""
        if reason == KILLED:
            self.kill(reason)
        else:
            self.crash(reason)

    def exit_signal(self, source: ActorRef, reason: ExitReason) -> None:
        """A linked incarnation exited. As in Erlang: trapped, it is a message; otherwise
        ``NORMAL`` is ignored and any other reason ends this incarnation with that reason."""
        if self.state == EXITED:
            return
        if getattr(self.actor, "trap_exits", False):
            self.cell.mailbox.put_signal(ExitSignal(source, reason))
        elif reason != NORMAL:
            self.exit_with(reason)

    def add_link(self, other: _Process) -> None:
        if self.links is None:
            self.links = set()
        self.links.add(other)

    async def wait_started(self) -> ExitReason | None:
        """None once ``on_start`` finished; the exit reason if the start failed."""
        if self.state == STARTING:
            if self.started is None:
                self.started = trio.Event()
            await self.started.wait()
        # ``ran`` rather than the state: an actor may start and exit before we look.
        return None if self.ran else self.reason

    async def wait_exited(self) -> ExitReason:
        if self.state != EXITED:
            if self.exited is None:
                self.exited = trio.Event()
            await self.exited.wait()
        assert self.reason is not None
        return self.reason

    def needs_start_wait(self) -> bool:
        actor = self.actor  # None once exited (``_finish``)
        return actor is not None and type(actor).on_start is not _BASE_ON_START

    # -- side tasks -----------------------------------------------------------------------
    def start_side_task(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.nursery.start_soon(self._side, self._side_scope(), fn, args, name=fn)

    def _side_scope(self, scope: trio.CancelScope | None = None) -> trio.CancelScope:
        if self.state == EXITED:
            raise ActorDeadError("the actor has exited", self.reason)
        if scope is None:
            scope = trio.CancelScope()
        scopes = self.side_scopes
        if scopes is None:
            self.side_scopes = scope
        elif type(scopes) is list:
            scopes.append(scope)
        else:
            self.side_scopes = [scopes, scope]
        return scope

    def side_task_count(self) -> int:
        scopes = self.side_scopes
        return 0 if scopes is None else len(scopes) if type(scopes) is list else 1

    async def _side(
        self, scope: trio.CancelScope, fn: Callable[..., Any], args: tuple, own: bool = True
    ) -> Any:
        try:
            if own:
                with scope:
                    return await fn(*args)
            else:  # the caller is in ``scope`` already (``run_beside(scope=...)``)
                return await fn(*args)
        except Exit as e:
            self.exit_with(e.reason)
        except Exception as e:
            self.crash(Error(e))
        finally:
            scopes = self.side_scopes
            if scopes is scope:
                self.side_scopes = None
            elif type(scopes) is list and scope in scopes:
                scopes.remove(scope)
                if len(scopes) == 1:
                    self.side_scopes = scopes[0]
        return None

    # -- the task body --------------------------------------------------------------------
    async def run(self) -> ExitReason:
        """The task body: the whole life of an incarnation, in one coroutine (for an idle actor
        a frame is an object more for the GC to walk, and spawning 100,000 actors is mostly
        GC). A supervisor runs it inside its children's nursery (``run_hosting``), which then
        does the final bookkeeping; for any other actor ``run`` does it."""
        final: ExitReason = KILLED  # if cancelled from outside
        hibernating = False
        try:
            if self.forced_reason is not None:
                return final  # killed before it ran: not even on_start
            actor = self.actor
            reason: ExitReason = NORMAL
            failed: ExitReason | None = None
            first: Any = _NOTHING
            looped = False
            resumed = self.ran  # woken from hibernation: started long ago
            has_on_start = not resumed and type(actor).on_start is not _BASE_ON_START
            if not has_on_start:
                # Nothing to start: running already. Most actors spend their life in this
                # first wait, which needs no cancel scope.
                if not resumed:
                    self._started()
                mailbox = self.cell.mailbox
                if (
                    not mailbox._items
                    and self.stop_reason is None
                    and self.crash_reason is None
                    and self.forced_reason is None
                ):
                    mailbox._receiver = current_task()
                    try:
                        first = await wait_task_rescheduled(mailbox.abort_get)
                    except _Interrupt:
                        pass  # a kill or a crash: the flags say which
            with trio.CancelScope() as work:
                self.scope = work
                if self.crash_reason is not None or self.forced_reason is not None:
                    work.cancel()
                try:
                    if has_on_start:
                        await actor.on_start()
                        self._started()
                except Exit as e:
                    failed = e.reason
                except Exception as e:
                    failed = Error(e)
                else:
                    if not work.cancel_called:  # not killed or crashed while idle
                        looped = True
                        reason = await self._loop(first)
            if not looped and first is not _NOTHING and first is not WAKE:
                # Handed over while idle, never looked at: it stays the oldest message.
                self.cell.mailbox.requeue_front([first])
            if self.forced_reason is not None:
                final = self.forced_reason  # killed: no on_stop
                return final
            if not self.ran:
                # The start failed (or a crash cut it short): no on_stop, as in OTP's init.
                failed = failed if failed is not None else self.crash_reason
                final = failed if failed is not None else KILLED
                return final
            if self.crash_reason is not None:
                reason = self.crash_reason
            call = self.current_call
            if call is not None:  # a crash interrupted it: answer now, not after on_stop
                self.current_call = None
                call.fail(reason)
            self.state = STOPPING
            final = reason
            if type(actor).on_stop is not _BASE_ON_STOP:
                pending, final = _call_on_stop(actor, reason)
                if pending is not None:
                    final = await self._await_on_stop(pending, final)
            return final
        except _Hibernate:
            hibernating = True  # the incarnation goes on without this task
            return final
        finally:
            if not hibernating and not self.actor._hosts_children:
                self._finish(final)

    async def run_hosting(self) -> None:
        """The task body of a supervisor: ``run`` inside the nursery of its children, so that
        none is left when it finishes."""
        final: ExitReason = KILLED
        try:
            async with trio.open_nursery() as nursery:
                self.actor._children_nursery = nursery
                self.host_scope = nursery.cancel_scope
                final = await self.run()
                # Its on_stop terminated every child it knows of; anything still in the
                # nursery is one it lost track of (a bug), and must not outlive it or hang
                # the nursery: cancel it (guarded by test_supervisor.py's no-orphans tests).
                nursery.cancel_scope.cancel()
        finally:
            self._finish(final)

    def _started(self) -> None:
        self.ran = True
        self.state = RUNNING
        started = self.started
        if started is not None:
            self.started = None  # nobody waits for it again: an idle actor keeps no Event
            started.set()

    async def _loop(self, pending: Any) -> ExitReason:
        # The hot path. ``Mailbox.get`` is inlined (one coroutine frame less per message and
        # per parked idle actor); like it, taking a queued message is a checkpoint, so a busy
        # actor cannot starve the others. ``pending`` is what the first, scope-less wait got.
        receive = self.actor.receive
        mailbox = self.cell.mailbox
        task = current_task()
        abort = mailbox.abort_get
        while self.stop_reason is None:
            if pending is not _NOTHING:
                message, pending = pending, _NOTHING
            elif mailbox._items:
                await checkpoint()
                items = mailbox._items
                if not items or self.stop_reason is not None:
                    continue  # a stop asked for meanwhile comes before the next message
                message = items.popleft()
                if mailbox._senders:
                    mailbox._admit_senders()
            else:
                if self.hibernated is None:  # ``Actor.hibernate``: sleep instead of parking
                    self.hibernated = False
                    if self.may_hibernate():
                        self._fall_asleep(task)
                        raise _Hibernate()
                # Parked, it holds no reference to the last message and reply: a parked
                # supervisor would keep its last child exit, and with it what the ended
                # child held, until the next message.
                message = result = None
                mailbox._receiver = task
                message = await wait_task_rescheduled(abort)
            if type(message) is _Call:
                self.current_call = message
                try:
                    result = await receive(message.message)
                except Exit as e:
                    self.current_call = None
                    message.fail(e.reason)
                    return e.reason
                except Exception as e:
                    reason = Error(e)
                    self.current_call = None
                    message.fail(reason)
                    return reason
                if self.current_call is message:
                    self.current_call = None
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
        if pending is not _NOTHING and pending is not WAKE:
            self.cell.mailbox.requeue_front([pending])  # a stop came first: keep it queued
        return self.stop_reason

    def _finish(self, reason: ExitReason) -> None:
        """Bookkeeping when an incarnation ends: fail its calls, signal links and monitors."""
        if self.forced_reason is not None:
            reason = self.forced_reason
        self.state = EXITED
        self.reason = reason
        if self.hibernated:  # finished without its task (``_release_children``)
            self.hibernated = False
            self.context = None
            self.cell.mailbox._sleeper = None
        if self.current_call is not None:
            self.current_call.fail(reason)
            self.current_call = None
        if self.deferred:
            for call in self.deferred:
                call.fail(reason)
            self.deferred.clear()
        scopes = self.side_scopes
        if scopes is not None:
            for scope in scopes if type(scopes) is list else (scopes,):
                scope.cancel()
        if self.actor._hosts_children:
            self.actor._release_children(reason)
        finish_incarnation(self, reason)
        # The actor and its incarnation refer to each other (``actor._proc``): a cycle, and
        # with it everything the actor holds (a connection's socket, its WebSocket and
        # parser: ~55 objects) would wait for the cyclic GC. The runtime needs the actor no
        # more; code of the actor's still running (a reader) keeps ``self._proc``.
        self.actor = None


def _call_on_stop(actor: Any, reason: ExitReason) -> tuple[Awaitable[None] | None, ExitReason]:
    """Call ``on_stop``: what it returned to await (None: nothing, the incarnation ends
    now) and the reason it ends with so far (an ``Exit`` or error raised by the call)."""
    try:
        return actor.on_stop(reason), reason
    except Exit as e:
        return None, e.reason
    except Exception as e:
        return None, Error(e)


def _same_context(a: contextvars.Context, b: contextvars.Context) -> bool:
    """Whether ``a`` and ``b`` hold the same variables with the same (identical) values."""
    return len(a) == len(b) and all(b.get(var, _NOTHING) is value for var, value in a.items())


def finish_incarnation(proc: Any, reason: ExitReason) -> None:
    """What every kind of incarnation does last: signal links and monitors, wake waiters, and
    hand the exit to the supervisor (or close the cell of an unsupervised actor)."""
    cell = proc.cell
    if cell.process is proc:
        cell.process = None
    ref = cell.ref
    links = proc.links
    if links:
        proc.links = None
        for other in links:
            if other.links is not None:
                other.links.discard(proc)
            other.exit_signal(ref, reason)
    watchers = proc.watchers
    if watchers:
        proc.watchers = None
        for mon in watchers:
            watcher = mon._watcher
            if watcher.state != EXITED:
                watcher.cell.mailbox.put_signal(Down(ref, reason, mon))
    if proc.started is not None:
        proc.started.set()
    if proc.exited is not None:
        proc.exited.set()
    if proc.on_exit is not None:
        proc.on_exit(proc, reason)
    else:
        cell.close(reason)


def run_beside(
    ref: ActorRef,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    scope: trio.CancelScope | None = None,
) -> Awaitable[Any]:
    """Run ``fn(actor, *args)`` in the calling task as a side task of ``ref``'s current
    incarnation (``actor`` is its ``Actor``): as ``Actor.start_task``, but without a task of
    its own. It is cancelled when the incarnation exits (a kill included); if it raises, the
    incarnation exits with ``Error`` (or the ``Exit`` reason). Returns what ``fn`` returned
    when it returns, None when the incarnation exited (or ``fn`` raised); raises
    ``ActorDeadError`` if it is not running. A cancellation of
    the calling task goes through to the caller, and the actor is not told.

    A plain function returning the awaitable: one coroutine frame less for as long as the
    side task runs (a socket's life).

    ``scope``: a cancel scope the caller is in already (a connection's nursery's), cancelled
    when the incarnation exits instead of a scope of the side task's own (a cancel scope and
    its status are ~600 bytes of every idle connection). Everything in it ends then, and the
    caller sees the cancellation (``trio.Cancelled``) where it would otherwise see a return."""
    proc = ref._cell.process
    if proc is None or not isinstance(proc.actor, Actor):
        raise ActorDeadError(f"{ref!r} is not a running trio actor", ref._cell.final_reason)
    return proc._side(proc._side_scope(scope), fn, (proc.actor, *args), scope is None)


def spawn(
    nursery: trio.Nursery, actor: Actor, *, name: str | None = None, mailbox_size: int | None = None
) -> ActorRef:
    """Run ``actor`` as an unsupervised task in ``nursery``; returns at once."""
    if not isinstance(actor, Actor):
        raise TypeError(f"spawn needs an Actor instance, not {actor!r}")
    cell = _Cell(name, mailbox_size or actor.mailbox_size)
    proc = _Process(cell, actor, nursery)
    cell.process = proc
    nursery.start_soon(proc.run, name=name or type(actor).__name__)
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
