"""The supervisor behaviour: OTP's ``supervisor.erl`` carried out on trio.

A supervisor is itself an actor (so it can be supervised, linked and monitored). Its children
run as tasks in a nursery it owns, so when it is gone nothing it started is left (no orphans).
Child exits reach it as signals in its mailbox, API requests as calls, and it handles them one
at a time, as OTP's ``gen_server`` does. What to do is decided by the pure functions of
``_strategy``; this module only carries the decisions out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ._actor import EXITED, Actor, ActorRef, Exit, _Cell, _Process, fail_calls, run_process
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
from ._reasons import SHUTDOWN, Error, ExitReason, Shutdown
from ._spec import (
    BRUTAL_KILL,
    DROP,
    INFINITY,
    SIMPLE_ONE_FOR_ONE,
    SUPERVISOR,
    TEMPORARY,
    ChildKind,
    ChildSpec,
    SupervisorSpec,
    check_child_for,
)
from ._strategy import RestartIntensity, children_to_restart, should_auto_shutdown, should_restart

__all__ = ["ChildCounts", "ChildInfo", "SupervisorRef", "TreeSnapshot", "open_supervisor"]

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "kind": self.kind,
            "state": self.state,
            "restarts": self.restarts,
            "mailbox_depth": self.mailbox_depth,
            "children": [c.to_dict() for c in self.children],
        }


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
    __slots__ = ("child",)

    def __init__(self, child: _Child) -> None:
        self.child = child


class _Supervisor(Actor):
    """The supervisor actor. Users reach it through a ``SupervisorRef``."""

    hosts_children = True
    mailbox_size = 10_000
    _children_nursery: trio.Nursery

    def __init__(self, spec: SupervisorSpec) -> None:
        self.spec = spec
        self.flags = spec.flags
        self.simple = spec.flags.strategy is SIMPLE_ONE_FOR_ONE
        self.intensity = RestartIntensity(spec.flags.intensity, spec.flags.period)
        self.children: list[_Child] = []  # start order (static) or spawn order (simple)
        self.by_cell: dict[_Cell, _Child] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def on_start(self) -> None:
        if self.simple:
            return
        for spec in self.spec.children:
            child = self._new_child(spec, spec.args)
            self.children.append(child)
            failed = await self._start(child)
            if failed is not None:
                # OTP: terminate what started, in reverse, and fail with
                # {shutdown, {failed_to_start_child, Id, Reason}}.
                await self._terminate_all()
                raise Exit(Shutdown(("failed_to_start_child", child.id, failed)))

    async def on_stop(self, reason: ExitReason) -> None:
        await self._terminate_all()
        for child in self.children:
            child.cell.close(reason)
        self.children.clear()

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is _ChildExit:
            await self._child_exited(message)
            return None
        if kind is _TryAgain:
            if message.child.state == RESTARTING_STATE and self._has(message.child):
                await self._restart(message.child)
            return None
        op, *args = message
        try:
            return True, await getattr(self, "_api_" + op)(*args)
        except (SupervisorError, InvalidChildSpec) as e:
            # OTP answers {error, ...}: a bad request never crashes the supervisor.
            return False, e

    # -- children -------------------------------------------------------------------------
    def _new_child(self, spec: ChildSpec, args: tuple[Any, ...]) -> _Child:
        size = getattr(spec.start, "mailbox_size", None)
        cell = _Cell(
            str(spec.id) if spec.id is not None else None,
            size if isinstance(size, int) else 1000,
            kind=spec.kind.value,
        )
        child = _Child(spec, args, cell)
        self.by_cell[cell] = child
        return child

    def _has(self, child: _Child) -> bool:
        return self.by_cell.get(child.cell) is child

    def _remove(self, child: _Child, reason: ExitReason) -> None:
        if self._has(child):
            del self.by_cell[child.cell]
            self.children.remove(child)
        child.cell.close(reason)

    async def _start(self, child: _Child) -> ExitReason | None:
        """Start one incarnation; None when it runs, else the reason its start failed."""
        cell = child.cell
        if child.spec.mailbox is DROP:
            fail_calls(cell.mailbox.drain(), None, "the actor restarted and dropped its mail")
        try:
            obj = child.spec.start(*child.args)
            proc = make_process(cell, obj, child.spec.kind, self._children_nursery, self._on_exit)
        except Exception as e:
            return Error(e)
        proc.tag = child
        cell.process = proc
        self._children_nursery.start_soon(proc.run, name=f"{self.ref.name}/{child.id}")
        if proc.needs_start_wait():
            failed = await proc.wait_started()
            if failed is not None:
                return failed
        child.proc = proc
        child.state = RUNNING_STATE
        return None

    def _on_exit(self, proc: Any, reason: ExitReason) -> None:
        # Runs in the child's task as it ends; the supervisor handles it in order.
        self._proc.cell.mailbox.put_signal(_ChildExit(proc.tag, proc, reason))

    async def _shutdown(self, child: _Child) -> None:
        """Stop one running child as its spec says (OTP's ``shutdown/1``)."""
        proc = child.proc
        child.proc = None
        child.state = TERMINATED_STATE
        if proc is None or proc.state == EXITED:
            return
        timeout = child.spec.shutdown
        if timeout is BRUTAL_KILL:
            proc.kill()
        else:
            proc.request_stop(SHUTDOWN)
            if timeout != INFINITY:
                with trio.move_on_after(timeout):
                    await proc.wait_exited()
                proc.kill()
        await proc.wait_exited()

    async def _terminate_many(self, children: list[_Child]) -> None:
        """Terminate in reverse start order; temporary children are removed (OTP)."""
        for child in reversed(children):
            await self._shutdown(child)
            if child.spec.restart is TEMPORARY:
                self._remove(child, SHUTDOWN)

    async def _terminate_all(self) -> None:
        if self.simple:
            await self._terminate_concurrently(list(self.children))
        else:
            await self._terminate_many(list(self.children))

    async def _terminate_concurrently(self, children: list[_Child]) -> None:
        """simple_one_for_one children stop together, as in OTP's terminate_dynamic_children."""
        procs = []
        for child in children:
            if child.proc is not None and child.proc.state != EXITED:
                procs.append(child.proc)
            child.proc = None
            child.state = TERMINATED_STATE
        template = self.spec.children[0]
        timeout = template.shutdown
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
        child = message.child
        if child.proc is not message.proc or not self._has(child):
            return  # a stale exit: the child was already terminated or replaced
        child.proc = None
        reason = message.reason
        if reason.abnormal:
            log.warning("%s: child %r exited: %r", self.ref.name, child.id, reason)
        if should_restart(child.spec.restart, reason):
            await self._restart(child)
            return
        # OTP's del_child: a temporary child (and any simple_one_for_one child) is removed;
        # others stay as terminated specs.
        child.state = TERMINATED_STATE
        if child.spec.restart is TEMPORARY or self.simple:
            self._remove(child, reason)
        if should_auto_shutdown(
            self.flags.auto_shutdown,
            child.spec.significant,
            any(c.spec.significant and c.proc is not None for c in self.children),
        ):
            self.stop(SHUTDOWN)

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
        child.cell.restarts += 1
        order = [c.id for c in self.children] if not self.simple else [child.id]
        if self.simple or len(children_to_restart(self.flags.strategy, order, child.id)) == 1:
            failed = await self._start(child)
            if failed is not None:
                child.state = RESTARTING_STATE
                self._proc.cell.mailbox.put_signal(_TryAgain(child))
            return
        scope = [
            c
            for c in self.children
            if c.id in set(children_to_restart(self.flags.strategy, order, child.id))
        ]
        child.state = TERMINATED_STATE
        await self._terminate_many([c for c in scope if c is not child])
        for c in scope:
            if not self._has(c):
                continue  # a temporary child removed by the termination
            failed = await self._start(c)
            if failed is not None:
                c.state = RESTARTING_STATE
                self._proc.cell.mailbox.put_signal(_TryAgain(c))
                return

    # -- the dynamic API (OTP's handle_call clauses) ------------------------------------------
    def _find(self, key: Any) -> _Child:
        if isinstance(key, ActorRef):
            child = self.by_cell.get(key._cell)
            if child is not None:
                return child
            raise NotFound(f"no child {key!r}")
        if self.simple:
            raise NotFound(f"no child {key!r} (simple_one_for_one children are found by ref)")
        for child in self.children:
            if child.id == key:
                return child
        raise NotFound(f"no child with id {key!r}")

    async def _api_start_child(self, arg: Any) -> ActorRef:
        if self.simple:
            template = self.spec.children[0]
            extra = tuple(arg) if arg is not None else ()
            child = self._new_child(template, template.args + extra)
            self.children.append(child)
            failed = await self._start(child)
            if failed is not None:
                self._remove(child, failed)
                raise StartFailed(None, failed)
            return child.cell.ref
        spec: ChildSpec = arg
        if not isinstance(spec, ChildSpec):
            raise InvalidChildSpec(f"start_child needs a ChildSpec, got {spec!r}")
        check_child_for(self.flags, spec)
        for existing in self.children:
            if existing.id == spec.id:
                if existing.proc is not None:
                    raise AlreadyStarted(existing.cell.ref)
                raise AlreadyPresent(f"child {spec.id!r} is present but not running")
        child = self._new_child(spec, spec.args)
        self.children.append(child)
        failed = await self._start(child)
        if failed is not None:
            self._remove(child, failed)
            raise StartFailed(spec.id, failed)
        return child.cell.ref

    async def _api_terminate_child(self, key: Any) -> None:
        child = self._find(key)
        await self._shutdown(child)
        if child.spec.restart is TEMPORARY or self.simple:
            self._remove(child, SHUTDOWN)

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
                c.state if c.proc is None else RUNNING_STATE,
            )
            for c in self.children
        ]

    def count_children(self) -> ChildCounts:
        active = sum(1 for c in self.children if c.proc is not None and c.proc.state != EXITED)
        sups = sum(1 for c in self.children if c.spec.kind is SUPERVISOR)
        return ChildCounts(len(self.children), active, sups, len(self.children) - sups)

    def snapshot(self, name: Hashable) -> TreeSnapshot:
        kids = []
        for c in self.children:
            proc = c.proc
            if proc is not None and isinstance(proc.actor, _Supervisor):
                snap = proc.actor.snapshot(c.id if not self.simple else c.cell.name)
                kids.append(
                    TreeSnapshot(
                        snap.id,
                        snap.kind,
                        snap.state,
                        c.cell.restarts,
                        snap.mailbox_depth,
                        snap.children,
                    )
                )
            else:
                state = RUNNING_STATE if proc is not None else c.state
                kind = getattr(proc, "kind_name", c.spec.kind.value) if proc else c.spec.kind.value
                kids.append(
                    TreeSnapshot(
                        c.id if not self.simple else c.cell.name,
                        kind,
                        state,
                        c.cell.restarts,
                        len(c.cell.mailbox),
                    )
                )
        return TreeSnapshot(
            name,
            f"supervisor:{self.flags.strategy.value}",
            "running" if self._proc.state != EXITED else "exited",
            self._proc.cell.restarts,
            len(self._proc.cell.mailbox),
            tuple(kids),
        )


class SupervisorRef:
    """The handle to a supervisor: OTP's ``supervisor`` module functions, as methods."""

    __slots__ = ("_sup", "ref")

    def __init__(self, sup: _Supervisor) -> None:
        self._sup = sup
        self.ref = sup.ref

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.ref.name}>"

    async def _call(self, *request: Any, timeout: float) -> Any:
        if not self.ref.is_alive():
            raise SupervisorGone(f"{self!r} is not running")
        try:
            ok, value = await self.ref.call(request, timeout=timeout)
        except ActorDeadError as e:
            raise SupervisorGone(f"{self!r} exited: {e.reason!r}") from e
        if not ok:
            raise value
        return value

    async def start_child(self, spec_or_args: Any = None, *, timeout: float = INFINITY) -> ActorRef:
        """Start a child (a ``ChildSpec``; for simple_one_for_one, a tuple of extra args)."""
        return await self._call("start_child", spec_or_args, timeout=timeout)

    async def terminate_child(self, key: Any, *, timeout: float = INFINITY) -> None:
        await self._call("terminate_child", key, timeout=timeout)

    async def restart_child(self, key: Any, *, timeout: float = INFINITY) -> ActorRef:
        return await self._call("restart_child", key, timeout=timeout)

    async def delete_child(self, key: Any, *, timeout: float = INFINITY) -> None:
        await self._call("delete_child", key, timeout=timeout)

    def which_children(self) -> list[ChildInfo]:
        return self._sup.which_children()

    def count_children(self) -> ChildCounts:
        return self._sup.count_children()

    def whereis(self, child_id: Hashable) -> ActorRef | None:
        for c in self._sup.children:
            if c.id == child_id and c.proc is not None:
                return c.cell.ref
        return None

    def child_supervisor(self, child_id: Hashable) -> SupervisorRef | None:
        """The ``SupervisorRef`` of a running child supervisor."""
        for c in self._sup.children:
            if c.id == child_id and c.proc is not None and isinstance(c.proc.actor, _Supervisor):
                return SupervisorRef(c.proc.actor)
        return None

    def snapshot(self) -> TreeSnapshot:
        return self._sup.snapshot(self.ref.name)

    def is_alive(self) -> bool:
        return self._sup._proc.state != EXITED

    async def wait(self) -> ExitReason:
        return await self._sup._proc.wait_exited()

    def stop(self, reason: ExitReason = SHUTDOWN) -> None:
        self._sup._proc.request_stop(reason)


def make_process(
    cell: _Cell, obj: Any, kind: ChildKind, nursery: trio.Nursery, on_exit: Any
) -> Any:
    """The incarnation for what a child's ``start`` returned."""
    from ._thread import ThreadActor, ThreadProcess

    if isinstance(obj, SupervisorSpec):
        if kind is not SUPERVISOR:
            raise TypeError("start returned a SupervisorSpec for a worker child")
        return _TaskProcess(cell, _Supervisor(obj), nursery, on_exit)
    if kind is SUPERVISOR:
        raise TypeError(f"a supervisor child's start must return a SupervisorSpec, not {obj!r}")
    if isinstance(obj, Actor):
        return _TaskProcess(cell, obj, nursery, on_exit)
    if isinstance(obj, ThreadActor):
        return ThreadProcess(cell, obj, nursery, on_exit)
    raise TypeError(f"start must return an Actor, a ThreadActor or a SupervisorSpec, not {obj!r}")


class _TaskProcess(_Process):
    __slots__ = ()
    kind_name = "worker"

    async def run(self) -> None:
        await run_process(self)


@asynccontextmanager
async def open_supervisor(
    spec: SupervisorSpec, *, name: str = "root"
) -> AsyncIterator[SupervisorRef]:
    """Run a supervision tree for the duration of the ``async with`` block.

    The children are started (in order) before the block runs; leaving the block stops them in
    reverse order. If the tree exits by itself (restart intensity reached, auto_shutdown), the
    block goes on and ``sup.is_alive()`` turns false; ``await sup.wait()`` gives the reason.
    """
    async with trio.open_nursery() as nursery:
        cell = _Cell(name, _Supervisor.mailbox_size, kind="supervisor")
        sup = _Supervisor(spec)
        proc = _TaskProcess(cell, sup, nursery)
        cell.process = proc
        nursery.start_soon(proc.run, name=f"supervisor {name}")
        failed = await proc.wait_started()
        if failed is not None:
            raise StartFailed(name, failed)
        handle = SupervisorRef(sup)
        try:
            yield handle
        finally:
            proc.request_stop(SHUTDOWN)
            with trio.CancelScope(shield=True):
                await proc.wait_exited()
