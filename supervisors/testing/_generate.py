"""Hypothesis strategies: supervision trees and command sequences that stay valid.

Commands are drawn one at a time against the reference model's state, so every target exists
when the command is drawn. When Hypothesis shrinks a sequence, a command whose target is gone is
answered ``"skipped"`` by :func:`~supervisors.testing._model.step` and is not run.
"""

from __future__ import annotations

from hypothesis import strategies as st

from ._model import (
    AUTO_SHUTDOWNS,
    DYNAMIC_PREFIX,
    REASONS,
    RESTART_TYPES,
    STRATEGIES,
    AdvanceClock,
    AutoShutdown,
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

__all__ = ["command_sequences", "commands", "supervisor_trees"]

_IDS = "abcdefgh"
_WORKER_SHUTDOWNS = ("brutal_kill", 5.0, "infinity")


def supervisor_trees(max_depth: int = 3, max_nodes: int = 8) -> st.SearchStrategy[SupervisorModel]:
    """Trees of supervisors and workers: at most ``max_depth`` levels of supervisors and
    ``max_nodes`` nodes (supervisors and child specs) in all; mixed strategies, restart types,
    intensities (0 to 3 in 1 to 10 s), auto_shutdown and worker shutdown modes."""
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
    strategy = draw(st.sampled_from(STRATEGIES))
    if strategy == "simple_one_for_one" and budget[0] < 1:
        strategy = "one_for_one"
    auto_shutdown = draw(st.sampled_from(AUTO_SHUTDOWNS))
    if strategy == "simple_one_for_one":
        count = 1
    else:
        count = draw(st.integers(0, min(4, budget[0])))
    children = []
    for index in range(count):
        if budget[0] < 1:
            break
        budget[0] -= 1
        nested = None
        if depth < max_depth and budget[0] >= 1 and draw(st.integers(0, 3)) == 0:
            nested = _draw_supervisor(draw, depth + 1, max_depth, budget)
        children.append(_draw_child(draw, _IDS[index], auto_shutdown, nested))
    return SupervisorModel(
        strategy=strategy,
        intensity=draw(st.integers(0, 3)),
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
    restart = draw(st.sampled_from(RESTART_TYPES))
    significant = auto_shutdown != "never" and restart != "permanent" and draw(st.booleans())
    shutdown = "infinity" if supervisor else draw(st.sampled_from(_WORKER_SHUTDOWNS))
    return ChildModel(child_id, restart, shutdown, significant, supervisor)


def command_sequences(
    tree: SupervisorModel, max_commands: int = 15
) -> st.SearchStrategy[list[Command]]:
    """Lists of up to ``max_commands`` commands for ``tree``, each drawn against the model's
    state after the ones before it."""

    @st.composite
    def sequences(draw: st.DrawFn) -> list[Command]:
        state, _ = initial_state(tree)
        count = draw(st.integers(0, max_commands))
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
    workers = sorted(state.running_workers())
    sups = [path for path, _ in state.walk()]
    options: list[st.SearchStrategy[Command]] = []
    if workers:
        exits = st.builds(ChildExit, st.sampled_from(workers), st.sampled_from(REASONS))
        options += [exits, exits, exits]
    if len(sups) > 1:
        options.append(st.builds(ChildExit, st.sampled_from(sups[1:]), st.just("shutdown")))
    api = st.sampled_from(sups).flatmap(lambda path: _api_call(state, path))
    options += [api, api, st.builds(AdvanceClock, st.integers(1, 10))]
    return st.one_of(options)


def _api_call(state: ModelState, path: tuple[str, ...]) -> st.SearchStrategy[Command]:
    sup = state.supervisor_at(path)
    assert sup is not None
    if sup.simple:
        ids = [f"{DYNAMIC_PREFIX}{n}" for n in range(sup.next_dynamic)] + [sup.spec.children[0].id]
        start = st.just(StartChild(path))
    else:
        ids = [child.id for child in sup.children] + ["z"]
        start = st.builds(StartChild, st.just(path), _new_worker(sup.spec.auto_shutdown))
    by_id = st.sampled_from(ids)
    return st.one_of(
        start,
        start,
        st.builds(TerminateChild, st.just(path), by_id),
        st.builds(RestartChild, st.just(path), by_id),
        st.builds(DeleteChild, st.just(path), by_id),
    )


@st.composite
def _new_worker(draw: st.DrawFn, auto_shutdown: AutoShutdown) -> ChildModel:
    return _draw_child(draw, draw(st.sampled_from(_IDS[:6])), auto_shutdown)
