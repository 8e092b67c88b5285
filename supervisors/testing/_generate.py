"""Hypothesis strategies: supervision trees and command sequences that stay valid.

Commands are drawn one at a time against the reference model's state, so every target exists
when the command is drawn. When Hypothesis shrinks a sequence, a command whose target is gone is
answered ``"skipped"`` by :func:`~supervisors.testing._model.step` and is not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

from ._model import (
    AUTO_SHUTDOWNS,
    DYNAMIC_PREFIX,
    REASONS,
    RESTART_TYPES,
    STRATEGIES,
    AdvanceClock,
    AutoShutdown,
    Burst,
    ChildExit,
    ChildModel,
    Command,
    DeleteChild,
    ModelState,
    RestartChild,
    StartChild,
    SupervisorModel,
    TerminateChild,
    initial_state,
    step,
)

__all__ = ["command_sequences", "commands", "scenarios", "supervisor_trees"]

T = TypeVar("T")
_IDS = "abcdefgh"
_WORKER_SHUTDOWNS = ("brutal_kill", 5.0, "infinity")


def supervisor_trees(max_depth: int = 3, max_nodes: int = 8) -> st.SearchStrategy[SupervisorModel]:
    """Trees of supervisors and workers: at most ``max_depth`` levels of supervisors and
    ``max_nodes`` nodes (supervisors and child specs) in all; mixed strategies, restart types,
    intensities (0 to 5 at the root, 0 to 3 below, in 1 to 10 s), auto_shutdown and worker
    shutdown modes."""
    if max_depth < 1 or max_nodes < 1:
        raise ValueError("a tree has at least its root supervisor")

    @st.composite
    def trees(draw: st.DrawFn) -> SupervisorModel:
        budget = [max_nodes - 1]
        return _draw_supervisor(draw, 1, max_depth, budget)

    return trees()


def _draw_supervisor(
    draw: st.DrawFn, depth: int, max_depth: int, budget: list[int]
) -> SupervisorModel:
    strategy = _pick(draw, STRATEGIES)
    if strategy == "simple_one_for_one" and budget[0] < 1:
        strategy = "one_for_one"
    auto_shutdown = _pick(draw, AUTO_SHUTDOWNS)
    if strategy == "simple_one_for_one":
        count = 1
    elif budget[0] < 1 or draw(st.integers(0, 9)) == 0:
        count = 0
    else:
        count = draw(st.integers(1, min(4, budget[0])))
    children = []
    for index in range(count):
        if budget[0] < 1:
            break
        budget[0] -= 1
        nested = None
        if depth < max_depth and budget[0] >= 1 and draw(st.integers(0, 2)) == 0:
            nested = _draw_supervisor(draw, depth + 1, max_depth, budget)
        children.append(_draw_child(draw, _IDS[index], auto_shutdown, nested))
    return SupervisorModel(
        strategy=strategy,
        intensity=draw(st.integers(0, 3 if depth > 1 else 5)),
        period=draw(st.integers(1, 10)),
        auto_shutdown=auto_shutdown,
        children=tuple(children),
    )


def _draw_child(
    draw: st.DrawFn,
    child_id: str,
    auto_shutdown: AutoShutdown,
    supervisor: SupervisorModel | None = None,
) -> ChildModel:
    restart = _pick(draw, RESTART_TYPES)
    significant = auto_shutdown != "never" and restart != "permanent" and draw(st.booleans())
    shutdown = "infinity" if supervisor else _pick(draw, _WORKER_SHUTDOWNS)
    return ChildModel(child_id, restart, shutdown, significant, supervisor)


def command_sequences(
    tree: SupervisorModel, max_commands: int = 15
) -> st.SearchStrategy[list[Command]]:
    """Lists of up to ``max_commands`` commands for ``tree``, each drawn against the model's
    state after the ones before it."""

    @st.composite
    def sequences(draw: st.DrawFn) -> list[Command]:
        state, _ = initial_state(tree)
        count = draw(st.integers(min(1, max_commands), max_commands))
        result: list[Command] = []
        for _ in range(count):
            if state.root is None:
                break
            command = draw(commands(state))
            result.append(command)
            state = step(state, command).state
        return result

    return sequences()


def commands(state: ModelState) -> st.SearchStrategy[Command]:
    """One command that is valid in ``state`` (the root supervisor must be running)."""
    return _commands(state)


@st.composite
def _commands(draw: st.DrawFn, state: ModelState) -> Command:
    # Choices are drawn as indices from cached strategies: building strategies per command
    # made generation, not the runs, the cost of the fuzz.
    workers = sorted(state.running_workers())
    sups = [path for path, _ in state.walk()]
    siblings = [
        group
        for path, sup in state.walk()
        if len(group := [(*path, c.id) for c in sup.children if c.running and not c.sup]) > 1
    ]
    kinds = (["exit"] * 4 if workers else []) + (["stop"] if len(sups) > 1 else [])
    kinds += ["api"] * 3 + ["clock"] + (["burst"] if siblings else [])
    kind = _pick(draw, kinds)
    if kind == "burst":
        group = list(_pick(draw, siblings))
        victims = [group.pop(draw(st.integers(0, len(group) - 1))) for _ in range(2)]
        if group and draw(st.booleans()):
            victims.append(_pick(draw, group))
        return Burst(tuple(victims))
    if kind == "exit":
        return ChildExit(_pick(draw, workers), _pick(draw, REASONS), cast=draw(st.booleans()))
    if kind == "stop":
        return ChildExit(_pick(draw, sups[1:]), _pick(draw, ("shutdown", "shutdown", "killed")))
    if kind == "clock":
        # Half the time exactly a running supervisor's period: the boundary of add_restart.
        periods = sorted({sup.spec.period for _, sup in state.walk()})
        if draw(st.booleans()):
            return AdvanceClock(_pick(draw, periods))
        return AdvanceClock(draw(st.integers(1, 10)))
    path = _pick(draw, sups)
    sup = state.supervisor_at(path)
    assert sup is not None
    if sup.simple:
        ids = [f"{DYNAMIC_PREFIX}{n}" for n in range(sup.next_dynamic)] + [sup.spec.children[0].id]
        # restart_child and delete_child only answer simple_one_for_one here: rarely asked.
        call = _pick(draw, ("start", "start", "terminate", "terminate", "restart", "delete"))
        if call == "start":
            return StartChild(path)
    else:
        ids = [child.id for child in sup.children] + ["z"]
        call = _pick(draw, ("start", "start", "terminate", "restart", "delete"))
        if call == "start":
            return StartChild(path, _new_child(draw, sup.spec.auto_shutdown, len(path)))
    command = {"terminate": TerminateChild, "restart": RestartChild, "delete": DeleteChild}[call]
    return command(path, _pick(draw, ids))


def _pick(draw: st.DrawFn, options: Sequence[T]) -> T:
    return options[draw(st.integers(0, len(options) - 1))]


def _new_child(draw: st.DrawFn, auto_shutdown: AutoShutdown, depth: int) -> ChildModel:
    """A worker, or now and then a small supervisor (while the tree is under 3 levels)."""
    child_id = _pick(draw, _IDS[:6])
    nested = None
    if depth < 2 and draw(st.integers(0, 5)) == 0:
        nested = _draw_supervisor(draw, 3, 3, [draw(st.integers(1, 2))])
    return _draw_child(draw, child_id, auto_shutdown, nested)


def scenarios(
    trees: st.SearchStrategy[SupervisorModel] | None = None, max_commands: int = 15
) -> st.SearchStrategy[tuple[SupervisorModel, list[Command]]]:
    """A tree (from ``trees``, default :func:`supervisor_trees`) and commands for it."""
    trees = trees if trees is not None else supervisor_trees()
    return trees.flatmap(
        lambda tree: st.tuples(st.just(tree), command_sequences(tree, max_commands))
    )
