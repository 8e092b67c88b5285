"""The supervisor behaviour: OTP's ``supervisor.erl`` carried out on trio.

A supervisor is itself an actor (so it can be supervised, linked and monitored). Its children
run as tasks in a nursery inside its own task, so when it is gone nothing it started is left (no
orphans), and their cells are closed (calls to them fail at once). Child exits reach it as
signals in its mailbox, API requests as calls, and it handles them one at a time, as OTP's
``gen_server`` does. What to do is decided by the pure functions of ``_strategy``; this module
only carries the decisions out. Tested in ``tests/supervisors/test_supervisor.py``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ._actor import (
    _BASE_ON_START,
    EXITED,
    Actor,
    ActorRef,
    Exit,
    _Cell,
    _Process,
    fail_calls,
)
from ._errors import (
    ActorDeadError,
    AlreadyPresent,
    AlreadyStarted,
    InvalidChildSpec,
    NotFound,
    Restarting,
    Running,
    SimpleOneForOneError,
    StartFailed,
    SupervisorError,
    SupervisorGone,
)
from ._reasons import KILLED, SHUTDOWN, Error, ExitReason, Shutdown
from ._spec import (
    BRUTAL_KILL,
    DROP,
    INFINITY,
    ONE_FOR_ONE,
    SIMPLE_ONE_FOR_ONE,
    SUPERVISOR,
    TEMPORARY,
    ChildKind,
    ChildSpec,
    SupervisorSpec,
    check_child_for,
)
from ._strategy import RestartIntensity, children_to_restart, should_auto_shutdown, should_restart
from ._thread import ThreadActor, ThreadProcess

__all__ = [
    "ChildCounts",
    "ChildInfo",
    "SupervisorRef",
    "SupervisorStats",
    "TreeSnapshot",
    "open_supervisor",
]

log = logging.getLogger("supervisors")

RUNNING_STATE, RESTARTING_STATE, TERMINATED_STATE = "running", "restarting", "terminated"


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``which_children()``: OTP's ``{Id, Child, Type, Modules}``."""

    id: Hashable
    ref: ActorRef | None
    kind: ChildKind
    state: str


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """OTP's ``count_children``: specs, running children, and children by kind."""

    specs: int
    active: int
    supervisors: int
    workers: int


@dataclass(frozen=True, slots=True)
class TreeSnapshot:
    """The live tree for introspection: what ``actorchat tree`` prints."""

    id: Hashable
    kind: str
    state: str
    restarts: int
    mailbox_depth: int
    children: tuple[TreeSnapshot, ...] = ()
    child_restarts: int = 0
    """A supervisor's: restarts it performed over its life (of children since gone, too)."""
    label: str | None = None
    """A worker's ``label`` attribute, if it set one (``Actor.label``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "kind": self.kind,
            "state": self.state,
            "restarts": self.restarts,
            "mailbox_depth": self.mailbox_depth,
            "child_restarts": self.child_restarts,
            "label": self.label,
            "children": [c.to_dict() for c in self.children],
        }


@dataclass(frozen=True, slots=True)
class SupervisorStats:
    """One supervisor of a tree, for metrics: cheaper than a ``TreeSnapshot`` (no object per
    child), so it can be taken often of a tree with 100,000 actors."""

    path: tuple[str, ...]
    """Ids from the root (the root's name first); children of a simple_one_for_one supervisor
    share their template's id, so several supervisors can have one path."""
    restarts: int
    """Restarts this supervisor performed since it started (of children since gone, too)."""
    children: int
    mailbox_depths: tuple[int, ...]
    """Messages waiting in each child's mailbox, in child order."""


class _Child:
    """OTP's ``#child{}`` record: a spec, its cell (ref and mailbox) and its incarnation."""

    __slots__ = ("args", "cell", "id", "proc", "spec", "state")

    def __init__(self, spec: ChildSpec, args: tuple[Any, ...], cell: _Cell) -> None:
        self.spec = spec
        self.id = spec.id
        self.args = args
        self.cell = cell
        self.proc: Any = None
        self.state = TERMINATED_STATE


class _ChildExit:
    __slots__ = ("child", "proc", "reason")

    def __init__(self, child: _Child, proc: Any, reason: ExitReason) -> None:
        self.child, self.proc, self.reason = child, proc, reason


class _TryAgain:
    """OTP's ``try_again_restart`` cast: retry a failed restart after the queued messages."""

    __slots__ = ("child",)

    def __init__(self, child: _Child) -> None:
        self.child = child


class _Request:
    """A dynamic-API call (``SupervisorRef.start_child`` ...), apart from any user message."""

    __slots__ = ("arg", "op")

    def __init__(self, op: str, arg: Any) -> None:
        self.op, self.arg = op, arg


class _Supervisor(Actor):
    """The supervisor actor. Users reach it through a ``SupervisorRef``."""

    _hosts_children = True
    mailbox_size = 10_000
    _children_nursery: trio.Nursery
    _context: contextvars.Context

    def __init__(self, spec: SupervisorSpec) -> None:
        self.spec = spec
        self.flags = spec.flags
        self.simple = spec.flags.strategy is SIMPLE_ONE_FOR_ONE
        self.intensity = RestartIntensity(spec.flags.intensity, spec.flags.period)
        # Restarts this incarnation performed, of children gone since included: a monotonic
        # count for metrics (``TreeSnapshot.child_restarts``).
        self.restarts_done = 0
        # Start order (static) or spawn order (simple), keyed by cell: O(1) removal matters
        # with 100,000 dynamic children.
        self.children: dict[_Cell, _Child] = {}
        self.instant_template = self.simple and _starts_instantly(spec.children[0])
        # One bound method shared by every child incarnation, not one each (GC work per actor).
        self.on_child_exit = self._on_exit

    # -- lifecycle ------------------------------------------------------------------------
    async def on_start(self) -> None:
        # Children start in the supervisor's context (contextvars), whoever asked for them: the
        # instant start_child runs in the caller's task (``can_start_instantly``).
        self._context = contextvars.copy_context()
        if self.simple:
            return
        for spec in self.spec.children:
            child = self._new_child(spec, spec.args)
            failed = await self._start(child)
            if failed is not None:
                # OTP: terminate what started, in reverse, and fail with
                # {shutdown, {failed_to_start_child, Id, Reason}}.
                self._remove(child, failed)
                await self._terminate_all()
                raise Exit(Shutdown(("failed_to_start_child", child.id, failed)))

    async def on_stop(self, reason: ExitReason) -> None:
        await self._terminate_all()

    def _release_children(self, reason: ExitReason) -> None:
        """The incarnation has ended, however (``KILLED`` included): no child cell may take
        mail any more. Called from ``_Process._finish``, after the children's nursery closed."""
        children = list(self.children.values())
        self.children.clear()
        for child in children:
            proc = child.proc
            if proc is not None and proc.hibernated:
                # No task, so the nursery did not cancel it: end it as if it had
                # (links and monitors see KILLED), before its cell closes.
                proc.forced_reason = proc.forced_reason or KILLED
                proc._finish(KILLED)
            child.proc = None
            child.cell.close(reason)

    def hibernate_idle(self) -> int:
        """Hibernate every child worker parked on an empty mailbox; returns how many."""
        count = 0
        for child in self.children.values():
            proc = child.proc
            if proc is not None and proc.hibernate():
                count += 1
        return count

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is _ChildExit:
            await self._child_exited(message)
            return None
        if kind is _TryAgain:
            child = message.child
            if child.state == RESTARTING_STATE and self._has(child):
                await self._restart(child)
            return None
        if kind is _Request:
            try:
                return True, await getattr(self, "_api_" + message.op)(message.arg)
            except (SupervisorError, InvalidChildSpec) as e:
                # OTP answers {error, ...}: a bad request never crashes the supervisor.
                return False, e
        # OTP's handle_info: "Supervisor received unexpected message", and carry on.
        log.error("%s: unexpected message %r", self.ref.name, message)
        return None

    # -- children -------------------------------------------------------------------------
    def _new_child(self, spec: ChildSpec, args: tuple[Any, ...]) -> _Child:
        size = getattr(spec.start, "mailbox_size", None)
        cell = _Cell(
            str(spec.id) if spec.id is not None else None,
            size if isinstance(size, int) and size >= 1 else 1000,
            kind=spec.kind.value,
        )
        child = _Child(spec, args, cell)
        self.children[cell] = child
        return child

    def _has(self, child: _Child) -> bool:
        return self.children.get(child.cell) is child

    def _remove(self, child: _Child, reason: ExitReason) -> None:
        if self._has(child):
            del self.children[child.cell]
        child.cell.close(reason)

    async def _start(self, child: _Child) -> ExitReason | None:
        """Start one incarnation; None when it runs, else the reason its start failed."""
        was_closed = child.cell.mailbox.closed
        proc = self._spawn(child)
        if not isinstance(proc, _Process):
            return proc
        if proc.needs_start_wait():
            failed = await proc.wait_started()
            if failed is not None:
                if was_closed:
                    child.cell.suspend(failed)
                return failed
        child.proc = proc
        child.state = RUNNING_STATE
        return None

    def _spawn(self, child: _Child) -> _Process | ExitReason:
        """The synchronous part of a start: make the incarnation and its task."""
        cell = child.cell
        mailbox = cell.mailbox
        if child.spec.mailbox is DROP:
            fail_calls(mailbox.drain(), None, "the actor restarted and dropped its mail")
        try:
            obj = child.spec.start(*child.args)
            proc = make_process(
                cell, obj, child.spec.kind, self._children_nursery, self.on_child_exit
            )
        except Exception as e:
            return Error(e)
        proc.tag = child
        size = getattr(proc.actor, "mailbox_size", None)
        if isinstance(size, int) and size >= 1:
            mailbox.capacity = size
        if mailbox.closed:
            mailbox.reopen()  # restart_child (or a one_for_all restart) of a terminated child
        cell.process = proc
        if (
            getattr(proc.actor, "start_asleep", False)
            and isinstance(proc, _Process)
            and proc.sleep_from_start(self._context)
        ):
            return proc  # no task until its first message (``Actor.start_asleep``)
        body = proc.run_hosting if isinstance(proc.actor, _Supervisor) else proc.run
        self._context.run(self._children_nursery.start_soon, body, name=cell.name)
        return proc

    def can_start_instantly(self) -> bool:
        """Whether a simple_one_for_one ``start_child`` may be carried out right now by the
        caller's task: the template's actor has no ``on_start`` to wait for, and the
        supervisor is idle (parked on an empty mailbox), so doing the request at once is the
        same as the supervisor doing it next. Spawning is then one step, not a call
        (``benchmarks/actors.py``; ``tests/supervisors/test_supervisor.py::test_instant*``)."""
        return self.instant_template and self._idle()

    def start_child_instantly(self, arg: Any) -> ActorRef:
        template = self.spec.children[0]
        child = self._new_child(template, template.args + _extra_args(arg))
        proc = self._spawn(child)
        if not isinstance(proc, _Process):
            self._remove(child, proc)
            raise StartFailed(template.id, proc)
        child.proc = proc
        child.state = RUNNING_STATE
        return child.cell.ref

    def _on_exit(self, proc: Any, reason: ExitReason) -> None:
        # Runs in the child's task as it ends (or where a sleeper is ended); the supervisor
        # handles it in order. An exit that restarts nothing, to a supervisor idle now, is
        # handled here at once: the supervisor would take it next, and it awaits nothing
        # (``_exited_now``). A connection's logout then costs the supervisor no pass, and
        # the next login's ``start_child`` finds it idle (``can_start_instantly``).
        message = _ChildExit(proc.tag, proc, reason)
        if self._idle() and not should_restart(message.child.spec.restart, reason):
            self._exited_now(message)
            return
        self._proc.cell.mailbox.put_signal(message)

    def _idle(self) -> bool:
        """Running and parked on an empty mailbox: the next message is handled next."""
        proc = self._proc
        return proc.steady() and proc.cell.mailbox.receiver_idle()

    async def _shutdown(self, child: _Child) -> ExitReason:
        """Stop one running child as its spec says (OTP's ``shutdown/1``)."""
        proc = child.proc
        child.proc = None
        child.state = TERMINATED_STATE
        if proc is None:
            return SHUTDOWN
        if proc.state != EXITED:
            timeout = child.spec.shutdown
            if timeout is BRUTAL_KILL:
                proc.kill()
            else:
                proc.request_stop(SHUTDOWN)
                if timeout != INFINITY:
                    with trio.move_on_after(timeout):
                        await proc.wait_exited()
                    proc.kill()  # a no-op if it exited in time
        return await proc.wait_exited()

    async def _terminate_many(self, children: list[_Child]) -> None:
        """Terminate in reverse start order; temporary children are removed (OTP)."""
        for child in reversed(children):
            reason = await self._shutdown(child)
            if child.spec.restart is TEMPORARY:
                self._remove(child, reason)

    async def _terminate_all(self) -> None:
        children = list(self.children.values())
        if self.simple:
            await self._terminate_concurrently(children)
        else:
            await self._terminate_many(children)

    async def _terminate_concurrently(self, children: list[_Child]) -> None:
        """simple_one_for_one children stop together, as in OTP's terminate_dynamic_children."""
        procs = []
        for child in children:
            if child.proc is not None and child.proc.state != EXITED:
                procs.append(child.proc)
            child.proc = None
            child.state = TERMINATED_STATE
        timeout = self.spec.children[0].shutdown
        for proc in procs:
            if timeout is BRUTAL_KILL:
                proc.kill()
            else:
                proc.request_stop(SHUTDOWN)
        if timeout is not BRUTAL_KILL and timeout != INFINITY:
            with trio.move_on_after(timeout):
                for proc in procs:
                    await proc.wait_exited()
            for proc in procs:
                proc.kill()
        for proc in procs:
            await proc.wait_exited()

    # -- exits and restarts ---------------------------------------------------------------
    async def _child_exited(self, message: _ChildExit) -> None:
        child = self._exited_now(message)
        if child is not None:
            await self._restart(child)

    def _exited_now(self, message: _ChildExit) -> _Child | None:
        """A child's exit, but for a restart (which may wait for the new incarnation's
        start): returns the child to restart, if any."""
        child = message.child
        if child.proc is not message.proc or not self._has(child):
            return None  # a stale exit: the child was already terminated or replaced
        child.proc = None
        reason = message.reason
        if reason.abnormal:
            log.warning("%s: child %r exited: %r", self.ref.name, child.id, reason)
        if should_restart(child.spec.restart, reason):
            return child
        # OTP's del_child: a temporary child (and any simple_one_for_one child) is removed;
        # others stay as terminated specs whose mailbox refuses mail until a restart.
        child.state = TERMINATED_STATE
        if child.spec.restart is TEMPORARY or self.simple:
            self._remove(child, reason)
        else:
            child.cell.suspend(reason)
        if should_auto_shutdown(
            self.flags.auto_shutdown, child.spec.significant, self._significant_left()
        ):
            self.stop(SHUTDOWN)
        return None

    def _significant_left(self) -> bool:
        # OTP's do_auto_shutdown(all_significant): any dynamic child left (simple), or any
        # significant child with a pid, restarting included.
        if self.simple:
            return bool(self.children)
        return any(
            c.spec.significant and (c.proc is not None or c.state == RESTARTING_STATE)
            for c in self.children.values()
        )

    async def _restart(self, child: _Child) -> None:
        self.intensity, allowed = self.intensity.add_restart(trio.current_time())
        if not allowed:
            log.error(
                "%s: reached max restart intensity (%d in %s s); shutting down",
                self.ref.name,
                self.flags.intensity,
                self.flags.period,
            )
            child.state = TERMINATED_STATE
            if child.spec.restart is TEMPORARY or self.simple:
                self._remove(child, SHUTDOWN)
            self.stop(SHUTDOWN)
            return
        if self.simple or self.flags.strategy is ONE_FOR_ONE:
            child.cell.restarts += 1
            self.restarts_done += 1
            if await self._start(child) is not None:
                child.state = RESTARTING_STATE
                self._proc.cell.mailbox.put_signal(_TryAgain(child))
            return
        # one_for_all / rest_for_one: OTP's restart_multiple_children terminates the others in
        # reverse start order, then starts them all in start order, including children that
        # had been stopped by terminate_child.
        order = list(self.children.values())
        chosen = set(children_to_restart(self.flags.strategy, [c.id for c in order], child.id))
        scope = [c for c in order if c.id in chosen]
        child.state = TERMINATED_STATE
        await self._terminate_many([c for c in scope if c is not child])
        for c in scope:
            if not self._has(c):
                continue  # a temporary child removed by the termination
            c.cell.restarts += 1
            self.restarts_done += 1
            if await self._start(c) is not None:
                c.state = RESTARTING_STATE
                self._proc.cell.mailbox.put_signal(_TryAgain(c))
                return

    # -- the dynamic API (OTP's handle_call clauses) ------------------------------------------
    def _find(self, key: Any) -> _Child:
        # OTP: simple_one_for_one children are found by pid, the others by id only.
        if self.simple:
            child = self.children.get(key._cell) if isinstance(key, ActorRef) else None
            if child is not None:
                return child
            raise NotFound(f"no child {key!r}")
        for child in self.children.values():
            if child.id == key:
                return child
        raise NotFound(f"no child with id {key!r}")

    async def _api_start_child(self, arg: Any) -> ActorRef:
        if self.simple:
            template = self.spec.children[0]
            child = self._new_child(template, template.args + _extra_args(arg))
            failed = await self._start(child)
            if failed is not None:
                self._remove(child, failed)
                raise StartFailed(template.id, failed)
            return child.cell.ref
        spec: ChildSpec = arg
        if not isinstance(spec, ChildSpec):
            raise InvalidChildSpec(f"start_child needs a ChildSpec, got {spec!r}")
        check_child_for(self.flags, spec)
        for existing in self.children.values():
            if existing.id == spec.id:
                if existing.proc is not None:
                    raise AlreadyStarted(existing.cell.ref)
                raise AlreadyPresent(f"child {spec.id!r} is present but not running")
        child = self._new_child(spec, spec.args)
        failed = await self._start(child)
        if failed is not None:
            self._remove(child, failed)
            raise StartFailed(spec.id, failed)
        return child.cell.ref

    async def _api_terminate_child(self, key: Any) -> None:
        if self.simple:
            # OTP: only by pid; a pid that is no longer alive answers ok.
            if not isinstance(key, ActorRef):
                raise SimpleOneForOneError(
                    "terminate_child of a simple_one_for_one child takes its ActorRef"
                )
            if key._cell not in self.children and not key.is_alive():
                return
        child = self._find(key)
        reason = await self._shutdown(child)
        if child.spec.restart is TEMPORARY or self.simple:
            self._remove(child, reason)
        else:
            child.cell.suspend(reason)

    async def _api_restart_child(self, key: Any) -> ActorRef:
        if self.simple:
            raise SimpleOneForOneError("restart_child is not supported by simple_one_for_one")
        child = self._find(key)
        if child.state == RESTARTING_STATE:
            raise Restarting(f"child {key!r} is restarting")
        if child.proc is not None:
            raise Running(f"child {key!r} is running")
        failed = await self._start(child)
        if failed is not None:
            raise StartFailed(child.id, failed)
        return child.cell.ref

    async def _api_delete_child(self, key: Any) -> None:
        if self.simple:
            raise SimpleOneForOneError("delete_child is not supported by simple_one_for_one")
        child = self._find(key)
        if child.state == RESTARTING_STATE:
            raise Restarting(f"child {key!r} is restarting")
        if child.proc is not None:
            raise Running(f"child {key!r} is running")
        self._remove(child, SHUTDOWN)

    # -- introspection (synchronous: the supervisor's state is read in place) ------------
    def which_children(self) -> list[ChildInfo]:
        return [
            ChildInfo(
                None if self.simple else c.id,
                c.cell.ref if c.proc is not None else None,
                c.spec.kind,
                RUNNING_STATE if c.proc is not None else c.state,
            )
            for c in self.children.values()
        ]

    def count_children(self) -> ChildCounts:
        children = self.children.values()
        active = sum(1 for c in children if c.proc is not None and c.proc.state != EXITED)
        sups = sum(1 for c in children if c.spec.kind is SUPERVISOR)
        workers = len(self.children) - sups
        # OTP counts the template as the one spec of a simple_one_for_one supervisor.
        specs = 1 if self.simple else len(self.children)
        return ChildCounts(specs, active, sups, workers)

    def stats(self, path: tuple[str, ...], out: list[SupervisorStats]) -> None:
        depths = []
        nested = []
        for c in self.children.values():
            depths.append(len(c.cell.mailbox))
            proc = c.proc
            if proc is not None and isinstance(proc.actor, _Supervisor):
                nested.append((c.cell.name if self.simple else c.id, proc.actor))
        out.append(SupervisorStats(path, self.restarts_done, len(self.children), tuple(depths)))
        for child_id, sup in nested:
            sup.stats((*path, str(child_id)), out)

    def snapshot(self, name: Hashable) -> TreeSnapshot:
        kids = []
        for c in self.children.values():
            proc = c.proc
            child_id = c.cell.name if self.simple else c.id
            if proc is not None and isinstance(proc.actor, _Supervisor):
                inner = proc.actor.snapshot(child_id)
                kids.append(
                    TreeSnapshot(
                        inner.id,
                        inner.kind,
                        inner.state,
                        c.cell.restarts,
                        inner.mailbox_depth,
                        inner.children,
                        inner.child_restarts,
                    )
                )
            else:
                kind = proc.kind_name if proc is not None else c.spec.kind.value
                state = RUNNING_STATE if proc is not None else c.state
                label = getattr(proc.actor, "label", None) if proc is not None else None
                kids.append(
                    TreeSnapshot(
                        child_id,
                        kind,
                        state,
                        c.cell.restarts,
                        len(c.cell.mailbox),
                        label=label if isinstance(label, str) else None,
                    )
                )
        return TreeSnapshot(
            name,
            f"supervisor:{self.flags.strategy.value}",
            "running" if self._proc.state != EXITED else "exited",
            self._proc.cell.restarts,
            len(self._proc.cell.mailbox),
            tuple(kids),
            self.restarts_done,
        )


class SupervisorRef:
    """The handle to a supervisor: OTP's ``supervisor`` module functions, as methods."""

    __slots__ = ("_sup", "ref")

    def __init__(self, sup: _Supervisor) -> None:
        self._sup = sup
        self.ref = sup.ref

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.ref.name}>"

    async def _call(self, op: str, arg: Any, timeout: float) -> Any:
        if not self.is_alive():
            raise SupervisorGone(f"{self!r} is not running")
        try:
            ok, value = await self.ref.call(_Request(op, arg), timeout=timeout)
        except ActorDeadError as e:
            raise SupervisorGone(f"{self!r} exited: {e.reason!r}") from e
        if not ok:
            raise value
        return value

    async def start_child(self, spec_or_args: Any = None, *, timeout: float = INFINITY) -> ActorRef:
        """Start a child (a ``ChildSpec``; for simple_one_for_one, a tuple of extra args)."""
        sup = self._sup
        if sup.instant_template:
            await trio.lowlevel.checkpoint()
            if sup.can_start_instantly():
                return sup.start_child_instantly(spec_or_args)
        return await self._call("start_child", spec_or_args, timeout)

    async def terminate_child(self, key: Any, *, timeout: float = INFINITY) -> None:
        await self._call("terminate_child", key, timeout)

    async def restart_child(self, key: Any, *, timeout: float = INFINITY) -> ActorRef:
        return await self._call("restart_child", key, timeout)

    async def delete_child(self, key: Any, *, timeout: float = INFINITY) -> None:
        await self._call("delete_child", key, timeout)

    def which_children(self) -> list[ChildInfo]:
        return self._sup.which_children()

    def count_children(self) -> ChildCounts:
        return self._sup.count_children()

    def whereis(self, child_id: Hashable) -> ActorRef | None:
        """The running child's ref (the first one, for a simple_one_for_one template id)."""
        for c in self._sup.children.values():
            if c.id == child_id and c.proc is not None:
                return c.cell.ref
        return None

    def child_supervisor(self, key: Hashable | ActorRef) -> SupervisorRef | None:
        """The ``SupervisorRef`` of a running child supervisor, by id or by its ``ActorRef``
        (the way to reach a simple_one_for_one supervisor child)."""
        for c in self._sup.children.values():
            match = c.cell.ref is key if isinstance(key, ActorRef) else c.id == key
            if match and c.proc is not None and isinstance(c.proc.actor, _Supervisor):
                return SupervisorRef(c.proc.actor)
        return None

    def snapshot(self) -> TreeSnapshot:
        return self._sup.snapshot(self.ref.name)

    def hibernate_idle(self) -> int:
        """Hibernate (``ActorRef.hibernate``) every child worker now parked on an empty
        mailbox, and return how many: for a periodic sweep of many idle children, each of which
        then costs no task until its next message. A busy child is woken again by its next
        message, so a sweep every few seconds costs it one task start per sweep at most."""
        return self._sup.hibernate_idle()

    def supervisor_stats(self) -> list[SupervisorStats]:
        """This supervisor and every supervisor under it, parents first (for metrics)."""
        out: list[SupervisorStats] = []
        self._sup.stats((str(self.ref.name),), out)
        return out

    def is_alive(self) -> bool:
        return self._sup._proc.state != EXITED

    async def wait(self) -> ExitReason:
        return await self._sup._proc.wait_exited()

    def stop(self, reason: ExitReason = SHUTDOWN) -> None:
        self._sup._proc.request_stop(reason)


def _extra_args(arg: Any) -> tuple[Any, ...]:
    if arg is None:
        return ()
    if not isinstance(arg, tuple | list):
        raise InvalidChildSpec(
            f"simple_one_for_one start_child takes a tuple of extra args, not {arg!r}"
        )
    return tuple(arg)


def _starts_instantly(template: ChildSpec) -> bool:
    """The template makes a plain trio actor with no ``on_start``: a class (no custom
    ``__new__``, so calling it gives exactly that class) whose start needs no waiting."""
    start = template.start
    return (
        template.kind is not SUPERVISOR
        and isinstance(start, type)
        and issubclass(start, Actor)
        and start.__new__ is object.__new__
        and start.on_start is _BASE_ON_START
    )


def make_process(
    cell: _Cell, obj: Any, kind: ChildKind, nursery: trio.Nursery, on_exit: Any
) -> _Process:
    """The incarnation for what a child's ``start`` returned."""
    if isinstance(obj, Actor) and kind is not SUPERVISOR:
        return _Process(cell, obj, nursery, on_exit)
    if isinstance(obj, SupervisorSpec):
        if kind is not SUPERVISOR:
            raise TypeError("start returned a SupervisorSpec for a worker child")
        return _Process(cell, _Supervisor(obj), nursery, on_exit)
    if kind is SUPERVISOR:
        raise TypeError(f"a supervisor child's start must return a SupervisorSpec, not {obj!r}")
    if isinstance(obj, ThreadActor):
        return ThreadProcess(cell, obj, nursery, on_exit)
    raise TypeError(f"start must return an Actor, a ThreadActor or a SupervisorSpec, not {obj!r}")


@asynccontextmanager
async def open_supervisor(
    spec: SupervisorSpec, *, name: str = "root"
) -> AsyncIterator[SupervisorRef]:
    """Run a supervision tree for the duration of the ``async with`` block.

    The children are started (in order) before the block runs; leaving the block stops them in
    reverse order. If the tree exits by itself (restart intensity reached, auto_shutdown), the
    block goes on and ``sup.is_alive()`` turns false; ``await sup.wait()`` gives the reason.
    """
    if not isinstance(spec, SupervisorSpec):
        raise InvalidChildSpec(f"open_supervisor needs a SupervisorSpec, not {spec!r}")
    failed: ExitReason | None = None
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            cell = _Cell(name, _Supervisor.mailbox_size, kind="supervisor")
            sup = _Supervisor(spec)
            proc = _Process(cell, sup, nursery)
            cell.process = proc
            nursery.start_soon(_run_shielded, proc, name=f"supervisor {name}")
            try:
                failed = await proc.wait_started()
                if failed is None:
                    try:
                        yield SupervisorRef(sup)
                    except BaseException as e:
                        body_error = e
                        raise
            finally:
                # However the block ends (cancellation included), the tree shuts down in
                # order: the root runs shielded and is stopped here, not cancelled
                # (``tests/supervisors/test_supervisor.py::test_cancelling_the_block*``).
                proc.request_stop(SHUTDOWN)
                with trio.CancelScope(shield=True):
                    await proc.wait_exited()
    except BaseExceptionGroup as group:
        # The supervisor has exited before the nursery closes, so the block's own exception
        # is alone in the group: give it back unwrapped, as a context manager should
        # (``tests/supervisors/test_supervisor.py::test_open_supervisor_lets_errors_through``).
        if body_error is not None and list(group.exceptions) == [body_error]:
            raise body_error from None
        raise
    if failed is not None:
        raise StartFailed(name, failed)


async def _run_shielded(proc: _Process) -> None:
    with trio.CancelScope(shield=True):
        await proc.run_hosting()
