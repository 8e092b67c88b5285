"""A pure reference model of OTP's supervisor rules (``lib/stdlib/src/supervisor.erl``).

The model is written from OTP's source, not from this library's runtime, so that comparing the
two finds the places where they disagree. Every function here is pure: :func:`step` takes a
:class:`ModelState` and a command and returns a new state, the events OTP would produce, and the
result of the call; nothing is awaited and no clock is read.

Functions named after OTP's are marked ``# supervisor.erl: name``.

What is modelled:

* ``do_restart`` (restart type x exit reason), ``restart/2`` for the four strategies
  (``restart_multiple_children`` terminates the rest in reverse start order, then starts them in
  start order, *including* children that had been stopped by ``terminate_child``, as OTP does),
  temporary children removed when terminated (``terminate_children``, ``del_child``);
* ``add_restart``: keep the restarts ``R >= Now - Period``, add ``Now``, give up when the count
  exceeds the intensity; giving up terminates all children in reverse start order and exits the
  supervisor with ``shutdown``, which its parent handles like any child exit (escalation);
* ``do_auto_shutdown`` for ``any_significant`` / ``all_significant``;
* ``handle_call`` for ``start_child``, ``terminate_child``, ``restart_child``, ``delete_child``;
* start order (depth first, left to right) and stop order (reverse start order, depth first).

Simplifications, where OTP's behaviour depends on timing that a test cannot control:

* Children always start (no ``ignore``, no start errors), so the ``restarting`` state and
  ``try_again_restart`` never occur.
* Workers stop at once when asked, so shutdown timeouts never run out; ``brutal_kill`` only
  changes whether the worker's ``on_stop`` runs (it does not: the exit is ``KILLED``).
* Supervisor children are shut down with ``infinity``. A supervisor that is killed
  (:class:`ChildExit` ``"killed"``) takes its whole subtree down at once and no ``on_stop``
  runs in it, as trio cancels the subtree. (In OTP the links' exit signals do it, and workers
  that trap exits would run ``terminate/2``.)
* A ``simple_one_for_one`` supervisor terminates its children concurrently: their stops are a
  :class:`Parallel` block, one branch per child, in no defined order between branches.
* Exits that happen together (:class:`Burst`) reach the supervisor in any order; the
  supervisor handles them one at a time, and an exit whose child it has meanwhile terminated
  or restarted is consumed (``unlink_flush``), as in OTP.
* Time is in whole seconds (OTP's ``erlang:monotonic_time(1)``) and moves only by
  :class:`AdvanceClock`: a step takes no time.
* ``terminate_child`` of a ``simple_one_for_one`` child that is already gone answers ``ok``
  (OTP: ``find_child`` gives the template when the pid is not alive; ``do_terminate`` of no
  pid is a no-op).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

__all__ = [
    "AdvanceClock",
    "Burst",
    "ChildExit",
    "ChildModel",
    "Command",
    "DeleteChild",
    "Event",
    "EventItem",
    "ModelState",
    "Parallel",
    "RestartChild",
    "StartChild",
    "Step",
    "SupervisorModel",
    "TerminateChild",
    "count_children",
    "flatten_events",
    "initial_state",
    "step",
    "step_alternatives",
    "stop_root",
]

Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
RestartType: TypeAlias = Literal["permanent", "transient", "temporary"]
AutoShutdown: TypeAlias = Literal["never", "any_significant", "all_significant"]
ShutdownMode: TypeAlias = Literal["brutal_kill", "infinity"] | float
Reason: TypeAlias = Literal["normal", "shutdown", "shutdown_detail", "error", "killed"]
Path: TypeAlias = tuple[str, ...]
Event: TypeAlias = tuple[Literal["start", "stop"], Path]

STRATEGIES: tuple[Strategy, ...] = (
    "one_for_one",
    "one_for_all",
    "rest_for_one",
    "simple_one_for_one",
)
RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")
AUTO_SHUTDOWNS: tuple[AutoShutdown, ...] = ("never", "any_significant", "all_significant")
REASONS: tuple[Reason, ...] = ("normal", "shutdown", "shutdown_detail", "error", "killed")
NORMAL_REASONS: frozenset[Reason] = frozenset({"normal", "shutdown", "shutdown_detail"})

DYNAMIC_PREFIX = "#"
"""Ids of ``simple_one_for_one`` children are ``#0``, ``#1``, ... in the order they started."""


# --- specs: what a tree is made of --------------------------------------------------------


@dataclass(frozen=True)
class ChildModel:
    """A child spec. ``supervisor`` is set for a child supervisor (kind ``supervisor``)."""

    id: str
    restart: RestartType = "permanent"
    shutdown: ShutdownMode = 5.0
    significant: bool = False
    supervisor: SupervisorModel | None = None

    @property
    def kind(self) -> Literal["worker", "supervisor"]:
        return "worker" if self.supervisor is None else "supervisor"


@dataclass(frozen=True)
class SupervisorModel:
    """A supervisor's ``init`` result: flags and child specs (for ``simple_one_for_one``, the
    single template)."""

    strategy: Strategy = "one_for_one"
    intensity: int = 1
    period: int = 5
    auto_shutdown: AutoShutdown = "never"
    children: tuple[ChildModel, ...] = ()

    def nodes(self) -> int:
        """How many nodes (this supervisor, its child specs, recursively) the tree has."""
        return 1 + sum(c.supervisor.nodes() if c.supervisor else 1 for c in self.children)


# --- commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildExit:
    """The child at ``path`` exits with ``reason`` on its own. A supervisor can only stop
    (``"shutdown"``: it terminates its children first) or be killed (``"killed"``)."""

    path: Path
    reason: Reason
    #: A worker's exit asked by a cast rather than a call: taken at once by the idle worker
    #: (``Actor.receive_now``). The model does not tell the two apart.
    cast: bool = False


@dataclass(frozen=True)
class Burst:
    """The workers at ``paths``, children of one supervisor, are killed at once. Their exits
    reach the supervisor in an order the model does not know: see :func:`step_alternatives`."""

    paths: tuple[Path, ...]


@dataclass(frozen=True)
class StartChild:
    """``start_child`` on the supervisor at ``sup``; ``child`` is ``None`` for
    ``simple_one_for_one`` (a new instance of the template)."""

    sup: Path
    child: ChildModel | None = None


@dataclass(frozen=True)
class TerminateChild:
    sup: Path
    id: str


@dataclass(frozen=True)
class RestartChild:
    sup: Path
    id: str


@dataclass(frozen=True)
class DeleteChild:
    sup: Path
    id: str


@dataclass(frozen=True)
class AdvanceClock:
    seconds: int


Command: TypeAlias = (
    ChildExit | Burst | StartChild | TerminateChild | RestartChild | DeleteChild | AdvanceClock
)


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parallel:
    """Events of concurrent shutdowns: each branch (the subtree at ``path``) is ordered, the
    branches interleave in any way."""

    branches: tuple[tuple[Path, tuple[EventItem, ...]], ...]


EventItem: TypeAlias = Event | Parallel


def flatten_events(items: list[EventItem] | tuple[EventItem, ...]) -> Iterator[Event]:
    """The events of ``items`` in one of their allowed orders."""
    for item in items:
        if isinstance(item, Parallel):
            for _path, branch in item.branches:
                yield from flatten_events(branch)
        else:
            yield item


# --- state --------------------------------------------------------------------------------


@dataclass
class ChildState:
    id: str
    spec: ChildModel
    running: bool = False
    sup: SupState | None = None  # the running child supervisor
    dead: bool = False  # gone, but its exit is not handled yet (a Burst)


@dataclass
class SupState:
    spec: SupervisorModel
    children: list[ChildState] = field(default_factory=list)  # start order
    restarts: list[int] = field(default_factory=list)  # newest first, as OTP keeps them
    next_dynamic: int = 0

    @property
    def simple(self) -> bool:
        return self.spec.strategy == "simple_one_for_one"

    def find(self, child_id: str) -> ChildState | None:
        return next((c for c in self.children if c.id == child_id), None)


@dataclass
class ModelState:
    root: SupState | None  # None once the root supervisor has exited
    now: int = 0
    root_exit: Reason | None = None

    def supervisor_at(self, path: Path) -> SupState | None:
        """The running supervisor at ``path`` (``()`` is the root), or ``None``."""
        sup = self.root
        for part in path:
            if sup is None:
                return None
            child = sup.find(part)
            sup = child.sup if child is not None and child.running else None
        return sup

    def child_at(self, path: Path) -> ChildState | None:
        if not path:
            return None
        sup = self.supervisor_at(path[:-1])
        return sup.find(path[-1]) if sup is not None else None

    def walk(self) -> Iterator[tuple[Path, SupState]]:
        """Every running supervisor, depth first, with its path."""

        def visit(path: Path, sup: SupState) -> Iterator[tuple[Path, SupState]]:
            yield path, sup
            for child in sup.children:
                if child.sup is not None and child.running:
                    yield from visit((*path, child.id), child.sup)

        if self.root is not None:
            yield from visit((), self.root)

    def running_workers(self) -> set[Path]:
        return {
            (*path, child.id)
            for path, sup in self.walk()
            for child in sup.children
            if child.running and child.spec.kind == "worker"
        }


@dataclass(frozen=True)
class Step:
    """The outcome of one command. ``result`` is ``"ok"`` or OTP's error atom for API calls,
    ``None`` for other commands, and ``"skipped"`` when the command's target is not there (the
    harness then does not run it)."""

    state: ModelState
    events: tuple[EventItem, ...]
    result: str | None


# --- the rules ----------------------------------------------------------------------------


def initial_state(tree: SupervisorModel) -> tuple[ModelState, tuple[EventItem, ...]]:
    """Start the root supervisor; return the state and the start events."""
    events: list[EventItem] = []
    root = _init_supervisor(tree, (), events)
    return ModelState(root=root), tuple(events)


def step(state: ModelState, command: Command) -> Step:
    """Apply ``command`` to (a copy of) ``state``."""
    state = copy.deepcopy(state)
    events: list[EventItem] = []
    if state.root is None:
        return Step(state, (), "skipped")
    if isinstance(command, AdvanceClock):
        state.now += command.seconds
        return Step(state, (), None)
    if isinstance(command, ChildExit):
        result = _child_exit(state, command, events)
        return Step(state, tuple(events), result)
    if isinstance(command, Burst):
        return _burst(state, command, command.paths)
    sup = state.supervisor_at(command.sup)
    if sup is None:
        return Step(state, (), "skipped")
    if isinstance(command, StartChild):
        result = _api_start_child(sup, command, events)
    elif isinstance(command, TerminateChild):
        result = _api_terminate_child(sup, command, events)
    elif isinstance(command, RestartChild):
        result = _api_restart_child(sup, command, events)
    else:
        result = _api_delete_child(sup, command)
    return Step(state, tuple(events), result)


def step_alternatives(state: ModelState, command: Command) -> list[Step]:
    """Every outcome OTP allows: one for most commands; for a :class:`Burst`, one for each
    order in which the exits may reach the supervisor (the same outcome only once)."""
    if not isinstance(command, Burst) or state.root is None:
        return [step(state, command)]
    outcomes: dict[str, Step] = {}
    for order in itertools.permutations(command.paths):
        outcome = _burst(copy.deepcopy(state), command, order)
        outcomes.setdefault(repr((outcome.events, outcome.state)), outcome)
    return list(outcomes.values())


def _burst(state: ModelState, command: Burst, order: tuple[Path, ...]) -> Step:
    events: list[EventItem] = []
    victims = [state.child_at(path) for path in command.paths]
    if any(c is None or not c.running or c.sup is not None for c in victims):
        return Step(state, (), "skipped")
    if len({path[:-1] for path in command.paths}) != 1:
        return Step(state, (), "skipped")
    for child in victims:
        assert child is not None
        child.dead = True
    for path in order:
        child = state.child_at(path)
        if child is None or not child.dead:
            continue  # consumed: its supervisor terminated or restarted it meanwhile
        child.running, child.dead = False, False
        _exited(state, path, "killed", events)
    return Step(state, tuple(events), None)


def stop_root(state: ModelState) -> Step:
    """The root supervisor is stopped from outside (``sup.stop()``)."""
    state = copy.deepcopy(state)
    events: list[EventItem] = []
    if state.root is not None:
        _terminate_children(state.root, (), events)
        state.root, state.root_exit = None, "shutdown"
    return Step(state, tuple(events), None)


def _init_supervisor(spec: SupervisorModel, path: Path, events: list[EventItem]) -> SupState:
    # supervisor.erl: init_children / init_dynamic
    sup = SupState(spec=spec)
    if not sup.simple:
        sup.children = [ChildState(id=c.id, spec=c) for c in spec.children]
        for child in sup.children:  # supervisor.erl: start_children
            _start(child, path, events)
    return sup


def _start(child: ChildState, sup_path: Path, events: list[EventItem]) -> None:
    path = (*sup_path, child.id)
    child.running = True
    if child.spec.supervisor is None:
        events.append(("start", path))
    else:
        child.sup = _init_supervisor(child.spec.supervisor, path, events)


def _shutdown(child: ChildState, sup_path: Path, events: list[EventItem]) -> None:
    # supervisor.erl: do_terminate / shutdown. A worker's on_stop runs unless it is killed.
    if not child.running:
        return
    path = (*sup_path, child.id)
    if child.dead:
        # OTP: shutdown/1 of a dead pid gets its 'EXIT' in unlink_flush: the exit is consumed.
        child.running, child.dead = False, False
        return
    if child.sup is not None:
        _terminate_children(child.sup, path, events)
    elif child.spec.shutdown != "brutal_kill":
        events.append(("stop", path))
    child.running, child.sup = False, None


def _terminate_children(sup: SupState, path: Path, events: list[EventItem]) -> None:
    # supervisor.erl: terminate/2 -> terminate_children, or terminate_dynamic_children (which
    # shuts all children down at once and then waits for all of them).
    if sup.simple:
        branches = []
        for child in sup.children:
            branch: list[EventItem] = []
            _shutdown(child, path, branch)
            if branch:
                branches.append(((*path, child.id), tuple(branch)))
        if branches:
            events.append(Parallel(tuple(branches)))
    else:
        for child in reversed(sup.children):
            _shutdown(child, path, events)
    sup.children = [c for c in sup.children if c.running or _kept_when_terminated(sup, c)]


def _kept_when_terminated(sup: SupState, child: ChildState) -> bool:
    return not sup.simple and child.spec.restart != "temporary"


def _del_child(sup: SupState, child: ChildState) -> None:
    # supervisor.erl: del_child. Temporary (and dynamic) children are forgotten.
    child.running, child.sup = False, None
    if not _kept_when_terminated(sup, child):
        sup.children.remove(child)


def _child_exit(state: ModelState, command: ChildExit, events: list[EventItem]) -> str | None:
    child = state.child_at(command.path)
    if child is None or not child.running:
        return "skipped"
    if child.sup is not None:
        if command.reason not in ("shutdown", "killed"):
            return "skipped"
        if command.reason == "shutdown":
            _terminate_children(child.sup, command.path, events)
    elif command.reason != "killed":
        events.append(("stop", command.path))
    child.running, child.sup = False, None
    _exited(state, command.path, command.reason, events)
    return None


def _exited(state: ModelState, path: Path, reason: Reason, events: list[EventItem]) -> None:
    """The child at ``path`` has exited with ``reason``; its supervisor reacts, and escalates
    while supervisors give up."""
    while path:
        sup_path = path[:-1]
        sup = state.supervisor_at(sup_path)
        assert sup is not None
        child = sup.find(path[-1])
        assert child is not None
        if not _do_restart(sup, sup_path, child, reason, state.now, events):
            return
        # supervisor.erl: {stop, shutdown, State} -> terminate/2
        _terminate_children(sup, sup_path, events)
        path, reason = sup_path, "shutdown"
        parent = state.supervisor_at(path[:-1]) if path else None
        if parent is not None:
            exited = parent.find(path[-1])
            assert exited is not None
            exited.running, exited.sup = False, None
    state.root, state.root_exit = None, reason


def _do_restart(
    sup: SupState,
    sup_path: Path,
    child: ChildState,
    reason: Reason,
    now: int,
    events: list[EventItem],
) -> bool:
    """supervisor.erl: do_restart. Returns whether the supervisor shuts down."""
    restart = child.spec.restart
    if restart == "permanent" or (restart == "transient" and reason not in NORMAL_REASONS):
        return _restart(sup, sup_path, child, now, events)
    _del_child(sup, child)
    return _do_auto_shutdown(sup, child)


def _do_auto_shutdown(sup: SupState, child: ChildState) -> bool:
    # supervisor.erl: do_auto_shutdown
    if sup.spec.auto_shutdown == "never" or not child.spec.significant:
        return False
    if sup.spec.auto_shutdown == "any_significant":
        return True
    if sup.simple:
        return not sup.children
    return not any(c.running and c.spec.significant for c in sup.children)


def count_children(sup: SupState) -> tuple[int, int, int, int]:
    """supervisor.erl: handle_call(count_children): specs, active, supervisors, workers. A
    simple_one_for_one supervisor has one spec (the template) and counts its instances."""
    active = sum(1 for c in sup.children if c.running)
    supervisors = sum(1 for c in sup.children if c.spec.kind == "supervisor")
    specs = 1 if sup.simple else len(sup.children)
    return specs, active, supervisors, len(sup.children) - supervisors


def add_restart(restarts: list[int], now: int, period: int) -> list[int]:
    """supervisor.erl: add_restart/3. ``restarts`` is newest first."""
    kept = []
    for r in restarts:  # lists:takewhile
        if not r >= now - period:
            break
        kept.append(r)
    return [now, *kept]


def _restart(
    sup: SupState,
    sup_path: Path,
    child: ChildState,
    now: int,
    events: list[EventItem],
) -> bool:
    # supervisor.erl: restart/2
    sup.restarts = add_restart(sup.restarts, now, sup.spec.period)
    if len(sup.restarts) > sup.spec.intensity:
        _del_child(sup, child)
        return True
    child.running, child.sup = False, None
    strategy = sup.spec.strategy
    if strategy in ("one_for_one", "simple_one_for_one"):
        _start(child, sup_path, events)
        return False
    first = 0 if strategy == "one_for_all" else sup.children.index(child)
    # supervisor.erl: restart_multiple_children -> terminate_children, start_children
    rest = sup.children[first:]
    for other in reversed(rest):
        _shutdown(other, sup_path, events)
    rest = [c for c in rest if c.spec.restart != "temporary"]
    sup.children[first:] = rest
    for other in rest:
        _start(other, sup_path, events)
    return False


def _api_start_child(sup: SupState, command: StartChild, events: list[EventItem]) -> str:
    # supervisor.erl: handle_call({start_child, ...}) / handle_start_child
    if sup.simple:
        template = sup.spec.children[0]
        child = ChildState(id=f"{DYNAMIC_PREFIX}{sup.next_dynamic}", spec=template)
        sup.next_dynamic += 1
    else:
        assert command.child is not None
        existing = sup.find(command.child.id)
        if existing is not None:
            return "already_started" if existing.running else "already_present"
        child = ChildState(id=command.child.id, spec=command.child)
    sup.children.append(child)
    _start(child, command.sup, events)
    return "ok"


def _api_terminate_child(sup: SupState, command: TerminateChild, events: list[EventItem]) -> str:
    if sup.simple and not command.id.startswith(DYNAMIC_PREFIX):
        return "simple_one_for_one"
    child = sup.find(command.id)
    if child is None:
        return "ok" if sup.simple else "not_found"  # OTP: a dead pid terminates fine
    _shutdown(child, command.sup, events)
    _del_child(sup, child)
    return "ok"


def _api_restart_child(sup: SupState, command: RestartChild, events: list[EventItem]) -> str:
    if sup.simple:
        return "simple_one_for_one"
    child = sup.find(command.id)
    if child is None:
        return "not_found"
    if child.running:
        return "running"
    _start(child, command.sup, events)
    return "ok"


def _api_delete_child(sup: SupState, command: DeleteChild) -> str:
    if sup.simple:
        return "simple_one_for_one"
    child = sup.find(command.id)
    if child is None:
        return "not_found"
    if child.running:
        return "running"
    sup.children.remove(child)
    return "ok"
