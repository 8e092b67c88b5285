"""The differential harness: run a model tree and its commands against the real runtime, step by
step, and compare with the reference model (:mod:`supervisors.testing._model`).

Everything runs in one ``trio.run`` under ``MockClock(autojump_threshold=0)`` so that actors
live across steps and Hypothesis can replay a run (trio seeds its scheduler from Hypothesis).
After each command the harness waits until every task is blocked and then checks:

* the ``("start", path)`` / ``("stop", path)`` log of the workers against the model's events
  (order included; a :class:`~supervisors.testing._model.Parallel` block in any interleaving);
* the API call's result (``ok`` or the error) and, for a crash, the reason the call fails with;
* every running supervisor's ``which_children()`` (ids and states, or the dynamic refs) and
  ``count_children()``;
* no orphans: the live worker incarnations (a side task each) are the model's running workers,
  and the task tree under the root supervisor holds exactly one task per supervisor and two
  per worker;
* every call is resolved: each worker incarnation holds a parked call, which must fail with
  ``ActorDeadError`` when, and only when, the incarnation ends; no call or shutdown may wait
  for the clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import supervisors as sv

from ._generate import scenarios
from ._model import (
    DYNAMIC_PREFIX,
    AdvanceClock,
    Burst,
    ChildExit,
    Command,
    DeleteChild,
    EventItem,
    ModelState,
    Parallel,
    Path,
    RestartChild,
    StartChild,
    SupervisorModel,
    TerminateChild,
    count_children,
    flatten_events,
    initial_state,
    step_alternatives,
    stop_root,
)
from ._recording import (
    REASONS,
    Parked,
    WorkerCrash,
    World,
    build_child_spec,
    build_spec,
    park,
)

__all__ = ["Runtime", "check_against_model", "events_match", "run_fuzz", "run_scenario"]

Runtime: TypeAlias = Callable[..., AbstractAsyncContextManager[sv.SupervisorRef]]
"""What runs a tree: ``runtime(spec, name=...)`` is an async context manager giving the root's
``SupervisorRef``, like :func:`supervisors.open_supervisor` (the default)."""

_ROOT = "root"
_HANG = 1e6  # mock seconds: a call still pending after this never resolves
_ERRORS: dict[type[Exception], str] = {
    sv.AlreadyStarted: "already_started",
    sv.AlreadyPresent: "already_present",
    sv.NotFound: "not_found",
    sv.Running: "running",
    sv.Restarting: "restarting",
    sv.SimpleOneForOneError: "simple_one_for_one",
}


def events_match(expected: tuple[EventItem, ...] | list[EventItem], observed: list[Any]) -> bool:
    """Whether ``observed`` is one of the orders ``expected`` allows."""
    position = 0
    for item in expected:
        if isinstance(item, Parallel):
            size = len(list(flatten_events((item,))))
            segment = observed[position:position + size]
            position += size
            for path, branch in item.branches:
                mine = [e for e in segment if e[1][: len(path)] == path]
                if not events_match(branch, mine):
                    return False
            if sum(len(list(flatten_events(b))) for _, b in item.branches) != len(segment):
                return False
        else:
            if position >= len(observed) or observed[position] != item:
                return False
            position += 1
    return position == len(observed)


class _Mismatch(AssertionError):
    pass


class _Harness:
    def __init__(self) -> None:
        self.world = World()
        self.root: sv.SupervisorRef
        self.nursery: trio.Nursery
        self.index = -1
        self.command: Command | None = None

    def fail(self, what: str) -> None:
        where = "at start" if self.index < 0 else f"at command {self.index}: {self.command!r}"
        raise _Mismatch(f"{where}: {what}")

    # -- finding things in the runtime --------------------------------------------------
    def supervisor(self, path: Path) -> sv.SupervisorRef | None:
        sup: sv.SupervisorRef | None = self.root
        for depth, part in enumerate(path):
            if sup is None:
                return None
            key: Any = part
            if part.startswith(DYNAMIC_PREFIX):
                key = self.world.dynamic.get(path[: depth + 1])
            sup = sup.child_supervisor(key) if key is not None else None
        return sup

    def worker(self, path: Path) -> sv.ActorRef | None:
        if path[-1].startswith(DYNAMIC_PREFIX):
            return self.world.dynamic.get(path)
        sup = self.supervisor(path[:-1])
        return sup.whereis(path[-1]) if sup is not None else None

    # -- running a command --------------------------------------------------------------
    async def apply(self, before: ModelState, command: Command) -> str | None:
        if isinstance(command, AdvanceClock):
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            clock.jump(command.seconds)
            return None
        if isinstance(command, ChildExit):
            await self.child_exit(before, command)
            return None
        if isinstance(command, Burst):
            refs = [self.worker(path) for path in command.paths]
            for path, ref in zip(command.paths, refs, strict=True):
                if ref is None:
                    self.fail(f"no running worker at {path}")
                    return None
                ref.kill()
            return None
        sup = self.supervisor(command.sup)
        if sup is None:
            self.fail(f"no running supervisor at {command.sup}")
            return None
        try:
            if isinstance(command, StartChild):
                await self.start_child(before, sup, command)
            elif isinstance(command, TerminateChild):
                await sup.terminate_child(await self.key(command.sup, command.id))
            elif isinstance(command, RestartChild):
                await sup.restart_child(await self.key(command.sup, command.id))
            elif isinstance(command, DeleteChild):
                await sup.delete_child(await self.key(command.sup, command.id))
        except sv.SupervisorError as e:
            if type(e) not in _ERRORS:
                raise
            return _ERRORS[type(e)]
        return "ok"

    async def key(self, sup: Path, child_id: str) -> Any:
        if not child_id.startswith(DYNAMIC_PREFIX):
            return child_id
        ref = self.world.dynamic.get((*sup, child_id))
        if ref is None:
            # An instance that never started in this run (Hypothesis shrank its start away):
            # it stands for a dead pid, so give a dead ref.
            ref = sv.spawn(self.nursery, sv.Actor())
            ref.kill()
            await ref.wait()
        return ref

    async def start_child(
        self, before: ModelState, sup: sv.SupervisorRef, command: StartChild
    ) -> None:
        state = before.supervisor_at(command.sup)
        assert state is not None
        if command.child is None:
            dynamic_id = f"{DYNAMIC_PREFIX}{state.next_dynamic}"
            ref = await sup.start_child((dynamic_id,))
            self.world.dynamic[(*command.sup, dynamic_id)] = ref
        else:
            await sup.start_child(build_child_spec(self.world, command.child, command.sup))

    async def child_exit(self, before: ModelState, command: ChildExit) -> None:
        child = before.child_at(command.path)
        assert child is not None
        if child.spec.supervisor is not None:
            sup = self.supervisor(command.path)
            if sup is None:
                self.fail(f"no running supervisor at {command.path}")
                return
            if command.reason == "killed":
                sup.ref.kill()
            else:
                sup.stop()
            return
        ref = self.worker(command.path)
        if ref is None:
            self.fail(f"no running worker at {command.path}")
            return
        if command.reason == "killed":
            ref.kill()
            return
        if command.cast:
            ref.send_nowait(("exit", command.reason))
            return
        try:
            await ref.call(("exit", command.reason), timeout=math.inf)
        except sv.ActorDeadError as e:
            expected = REASONS.get(command.reason)
            if expected is not None and e.reason != expected:
                self.fail(f"the crash call failed with {e.reason!r}, not {expected!r}")
            if expected is None and not (
                isinstance(e.reason, sv.Error) and isinstance(e.reason.exception, WorkerCrash)
            ):
                self.fail(f"the crash call failed with {e.reason!r}, not Error(WorkerCrash)")
        else:
            self.fail("the crash call returned a value")

    async def run(
        self, model: ModelState, events: tuple[EventItem, ...], commands: list[Command]
    ) -> ModelState:
        """Check the started tree, then run ``commands``; return the model's last state."""
        await self.settle(model)
        problem = self.difference(model, events, 0)
        if problem is not None:
            self.fail(problem)
        for self.index, self.command in enumerate(commands):
            model = await self.run_step(model, self.command)
        self.index, self.command = len(commands), None
        return model

    async def run_step(self, model: ModelState, command: Command) -> ModelState:
        """Run ``command`` on the runtime; return the model's state that matches it."""
        alternatives = step_alternatives(model, command)
        if alternatives[0].result == "skipped":
            return model
        mark = len(self.world.log)
        result = await self.apply(model, command)
        await self.settle(alternatives[0].state)
        problems = []
        for outcome in alternatives:
            if result != outcome.result:
                problem = f"the runtime answered {result!r}, the model {outcome.result!r}"
            else:
                problem = self.difference(outcome.state, outcome.events, mark)
            if problem is None:
                return outcome.state
            problems.append(problem)
        self.fail(problems[0] if len(problems) == 1 else f"no allowed outcome: {problems}")
        return model

    # -- checks -------------------------------------------------------------------------
    async def settle(self, model: ModelState) -> None:
        """Wait for quiescence; park a call in each new worker incarnation."""
        await trio.testing.wait_all_tasks_blocked()
        if trio.current_time() != model.now:
            self.fail(f"the clock moved to {trio.current_time()} (model: {model.now})")
        new = [w for w in self.world.live if w not in self.world.parked_in]
        for worker in sorted(new, key=lambda w: w.path):
            self.world.parked_in.add(worker)
            parked = Parked()
            self.world.parked.append(parked)
            self.nursery.start_soon(park, worker.ref, parked)
        if new:
            await trio.testing.wait_all_tasks_blocked()

    def difference(
        self, model: ModelState, events: tuple[EventItem, ...], mark: int
    ) -> str | None:
        """The first difference between the runtime and ``model`` after a step, if any."""
        observed = self.world.log[mark:]
        if not events_match(events, observed):
            return f"events {observed} but the model expects {list(events)}"
        live = sorted(w.path for w in self.world.live)
        if live != sorted(model.running_workers()):
            return f"live workers {live}, model {sorted(model.running_workers())}"
        for parked in self.world.parked:
            ended = parked.worker is None or parked.worker not in self.world.live
            if ended and not isinstance(parked.outcome, sv.ActorDeadError):
                return f"a call parked in a gone worker ended with {parked.outcome!r}"
            if not ended and parked.outcome is not None:
                return f"a call parked in a live worker ended with {parked.outcome!r}"
        if model.root is None:
            if self.root.is_alive():
                return "the root supervisor is alive; the model says it exited"
            return None
        if not self.root.is_alive():
            return "the root supervisor exited; the model says it runs"
        for path, sup_state in model.walk():
            sup = self.supervisor(path)
            if sup is None:
                return f"no running supervisor at {path}"
            rows = sup.which_children()
            if sup_state.simple:
                got: Any = sorted((id(r.ref), r.state) for r in rows)
                want: Any = sorted(
                    (id(self.world.dynamic.get((*path, c.id))), "running")
                    for c in sup_state.children
                )
            else:
                got = [(r.id, r.state) for r in rows]
                want = [(c.id, "running" if c.running else "terminated")
                        for c in sup_state.children]
            if got != want:
                return f"which_children at {path}: {got}, model {want}"
            counts = sup.count_children()
            got = (counts.specs, counts.active, counts.supervisors, counts.workers)
            if got != count_children(sup_state):
                return f"count_children at {path}: {got}, model {count_children(sup_state)}"
        tasks = _count_tasks(f"supervisor {_ROOT}")
        sups = sum(1 for _ in model.walk()) - 1
        expected_tasks = sups + 2 * len(model.running_workers())
        if tasks is not None and tasks != expected_tasks:
            return f"{tasks} tasks under the root supervisor, expected {expected_tasks}"
        return None


def _count_tasks(name: str) -> int | None:
    """How many tasks run below the task called ``name`` (the runtime's root supervisor task);
    ``None`` if there is no such task (another runtime)."""
    def below(task: trio.lowlevel.Task) -> int:
        return sum(1 + below(t) for n in task.child_nurseries for t in n.child_tasks)

    def find(task: trio.lowlevel.Task) -> trio.lowlevel.Task | None:
        if task.name == name:
            return task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                found = find(child)
                if found is not None:
                    return found
        return None

    root = find(trio.lowlevel.current_root_task())
    return below(root) if root is not None else None


async def check_against_model(
    tree: SupervisorModel, commands: list[Command], runtime: Runtime | None = None
) -> None:
    """Run ``tree`` and ``commands`` against ``runtime`` (default :func:`sv.open_supervisor`)
    and the model, step by step; raise ``AssertionError`` at the first difference.

    Must run under ``trio.testing.MockClock(autojump_threshold=0)``; see :func:`run_scenario`.
    """
    open_tree = runtime if runtime is not None else sv.open_supervisor
    harness = _Harness()
    world = harness.world
    model, events = initial_state(tree)
    async with trio.open_nursery() as nursery:
        harness.nursery = nursery
        with trio.move_on_after(_HANG) as guard:
            async with open_tree(build_spec(world, tree, ()), name=_ROOT) as root:
                harness.root = root
                try:
                    model = await harness.run(model, events, commands)
                except BaseException:
                    # A runtime that lost track of a child would wait for it forever while
                    # stopping: cancel the whole tree so that the difference gets reported.
                    root.ref.kill()
                    raise
                mark = len(world.log)
                final = stop_root(model)
        if guard.cancelled_caught:
            harness.fail("a call or a shutdown never finished")
        reason = await harness.root.wait()
        if reason != sv.SHUTDOWN:
            harness.fail(f"the root supervisor exited with {reason!r}, not SHUTDOWN")
        await trio.testing.wait_all_tasks_blocked()
        observed = world.log[mark:]
        if not events_match(final.events, observed):
            harness.fail(f"stopping the root: events {observed}, model {list(final.events)}")
        if world.live:
            harness.fail(f"workers still live after the root stopped: {world.live}")
        for parked in world.parked:
            if not isinstance(parked.outcome, sv.ActorDeadError):
                harness.fail(f"a parked call ended with {parked.outcome!r}")
        nursery.cancel_scope.cancel()


def run_scenario(
    tree: SupervisorModel, commands: list[Command], runtime: Runtime | None = None
) -> None:
    """:func:`check_against_model` in a fresh ``trio.run`` under an autojumping mock clock."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    try:
        trio.run(check_against_model, tree, commands, runtime, clock=clock)
    except BaseExceptionGroup as group:
        # Nurseries wrap the mismatch; give Hypothesis (and the reader) the plain one.
        mismatches = group.subgroup(_Mismatch)
        if mismatches is None:
            raise
        while isinstance(mismatches, BaseExceptionGroup):
            mismatches = mismatches.exceptions[0]
        raise mismatches from None


def run_fuzz(
    examples: int = 2000,
    *,
    trees: st.SearchStrategy[SupervisorModel] | SupervisorModel | None = None,
    max_commands: int = 15,
    runtime: Runtime | None = None,
) -> None:
    """Fuzz ``examples`` generated scenarios; raise (with Hypothesis' shrunk example) at the
    first difference from the model. ``trees`` may be a fixed tree of yours or a strategy."""
    if isinstance(trees, SupervisorModel):
        trees = st.just(trees)

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(scenarios(trees, max_commands))
    def fuzz(scenario: tuple[SupervisorModel, list[Command]]) -> None:
        run_scenario(*scenario, runtime=runtime)

    fuzz()
