"""Example tests of the pure reference model (``supervisors/testing/_model.py``), after OTP's
``supervisor_SUITE``: the restart-type x reason matrix, the scope of each strategy, the exact
restart at which intensity gives up, escalation, auto_shutdown and the dynamic API."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisors.testing import (
    AdvanceClock,
    Burst,
    ChildExit,
    ChildModel,
    DeleteChild,
    Parallel,
    RestartChild,
    StartChild,
    SupervisorModel,
    TerminateChild,
    command_sequences,
    initial_state,
    step,
    step_alternatives,
    stop_root,
    supervisor_trees,
)
from supervisors.testing._model import add_restart, count_children, flatten_events


def run(tree, *commands):
    """Apply ``commands`` in turn; return the final state, the events of the last command and
    its result."""
    state, events = initial_state(tree)
    result = None
    for command in commands:
        outcome = step(state, command)
        state, events, result = outcome.state, outcome.events, outcome.result
    return state, list(events), result


def start(*path):
    return ("start", path)


def stop(*path):
    return ("stop", path)


ABC = tuple(ChildModel(i) for i in "abc")


def test_start_order_is_depth_first():
    inner = SupervisorModel(children=(ChildModel("x"), ChildModel("y")))
    tree = SupervisorModel(
        children=(ChildModel("a"), ChildModel("s", shutdown="infinity", supervisor=inner),
                  ChildModel("b"))
    )
    _, events = initial_state(tree)
    assert list(events) == [start("a"), start("s", "x"), start("s", "y"), start("b")]
    assert list(stop_root(initial_state(tree)[0]).events) == [
        stop("b"), stop("s", "y"), stop("s", "x"), stop("a"),
    ]


@pytest.mark.parametrize(
    ("restart", "reason", "restarted"),
    [
        ("permanent", "normal", True),
        ("permanent", "shutdown", True),
        ("permanent", "shutdown_detail", True),
        ("permanent", "error", True),
        ("permanent", "killed", True),
        ("transient", "normal", False),
        ("transient", "shutdown", False),
        ("transient", "shutdown_detail", False),
        ("transient", "error", True),
        ("transient", "killed", True),
        ("temporary", "normal", False),
        ("temporary", "error", False),
        ("temporary", "killed", False),
    ],
)
def test_restart_type_by_reason(restart, reason, restarted):
    tree = SupervisorModel(intensity=5, children=(ChildModel("w", restart=restart),))
    state, events, _ = run(tree, ChildExit(("w",), reason))
    own_stop = [] if reason == "killed" else [stop("w")]
    assert events == own_stop + ([start("w")] if restarted else [])
    child = state.root.find("w")
    if restart == "temporary":
        assert child is None  # del_child forgets temporary children
    else:
        assert child is not None and child.running is restarted


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", [stop("b"), start("b")]),
        ("rest_for_one", [stop("b"), stop("c"), start("b"), start("c")]),
        ("one_for_all", [stop("b"), stop("c"), stop("a"), start("a"), start("b"), start("c")]),
    ],
)
def test_strategy_scope(strategy, expected):
    tree = SupervisorModel(strategy=strategy, intensity=5, children=ABC)
    _, events, _ = run(tree, ChildExit(("b",), "error"))
    assert events == expected


def test_temporary_siblings_are_removed_not_restarted():
    children = (ChildModel("a"), ChildModel("b"), ChildModel("t", restart="temporary"))
    tree = SupervisorModel(strategy="one_for_all", intensity=5, children=children)
    state, events, _ = run(tree, ChildExit(("b",), "error"))
    assert events == [stop("b"), stop("t"), stop("a"), start("a"), start("b")]
    assert [c.id for c in state.root.children] == ["a", "b"]


def test_multiple_restart_starts_children_stopped_by_terminate_child():
    # OTP's start_children starts every child of the list, also those with pid undefined.
    tree = SupervisorModel(strategy="rest_for_one", intensity=5, children=ABC)
    _, events, _ = run(tree, TerminateChild((), "c"), ChildExit(("a",), "error"))
    assert events == [stop("a"), stop("b"), start("a"), start("b"), start("c")]


def test_brutal_kill_skips_on_stop():
    children = (ChildModel("a", shutdown="brutal_kill"), ChildModel("b"))
    tree = SupervisorModel(strategy="one_for_all", intensity=5, children=children)
    _, events, _ = run(tree, ChildExit(("b",), "error"))
    assert events == [stop("b"), start("a"), start("b")]


def test_add_restart_keeps_restarts_at_the_period_boundary():
    assert add_restart([3, 1], now=6, period=5) == [6, 3, 1]
    assert add_restart([3, 0], now=6, period=5) == [6, 3]


@pytest.mark.parametrize("intensity", [0, 1, 3])
def test_intensity_gives_up_on_the_restart_after_intensity(intensity):
    tree = SupervisorModel(intensity=intensity, period=5, children=(ChildModel("w"),))
    crash = ChildExit(("w",), "error")
    state, _, _ = run(tree, *[crash] * intensity)
    assert state.root is not None
    state, events, _ = run(tree, *[crash] * (intensity + 1))
    assert state.root is None and state.root_exit == "shutdown"
    assert events == [stop("w")]


def test_intensity_forgets_restarts_older_than_the_period():
    tree = SupervisorModel(intensity=1, period=5, children=(ChildModel("w"),))
    crash = ChildExit(("w",), "error")
    state, _, _ = run(tree, crash, AdvanceClock(5), crash)
    assert state.root is None  # the restart at 0 is still within [5 - 5, 5]
    state, _, _ = run(tree, crash, AdvanceClock(6), crash, AdvanceClock(6), crash)
    assert state.root is not None


def test_escalation_restarts_the_child_supervisor_with_fresh_history():
    inner = SupervisorModel(intensity=0, children=(ChildModel("x"), ChildModel("y")))
    tree = SupervisorModel(
        intensity=1,
        children=(ChildModel("a"), ChildModel("s", shutdown="infinity", supervisor=inner)),
    )
    state, events, _ = run(tree, ChildExit(("s", "x"), "error"))
    assert events == [stop("s", "x"), stop("s", "y"), start("s", "x"), start("s", "y")]
    assert state.root.restarts == [0] and state.supervisor_at(("s",)).restarts == []
    state, events, _ = run(tree, ChildExit(("s", "x"), "error"), ChildExit(("s", "y"), "error"))
    assert events == [stop("s", "y"), stop("s", "x"), stop("a")]
    assert state.root is None


def test_transient_child_supervisor_that_gives_up_is_not_restarted():
    inner = SupervisorModel(intensity=0, children=(ChildModel("x"),))
    child = ChildModel("s", restart="transient", shutdown="infinity", supervisor=inner)
    state, events, _ = run(SupervisorModel(children=(child,)), ChildExit(("s", "x"), "error"))
    assert events == [stop("s", "x")]
    assert not state.root.find("s").running


@pytest.mark.parametrize("mode", ["any_significant", "all_significant"])
def test_auto_shutdown(mode):
    children = (
        ChildModel("a"),
        ChildModel("s1", restart="transient", significant=True),
        ChildModel("s2", restart="temporary", significant=True),
    )
    tree = SupervisorModel(auto_shutdown=mode, children=children)
    state, events, _ = run(tree, ChildExit(("s1",), "normal"))
    if mode == "any_significant":
        assert state.root is None and events == [stop("s1"), stop("s2"), stop("a")]
    else:
        assert state.root is not None and events == [stop("s1")]
        state, events, _ = run(tree, ChildExit(("s1",), "normal"), ChildExit(("s2",), "error"))
        assert state.root is None and events == [stop("s2"), stop("a")]


def test_abnormal_exit_of_significant_transient_restarts_it():
    children = (ChildModel("s", restart="transient", significant=True),)
    tree = SupervisorModel(auto_shutdown="any_significant", children=children)
    state, events, _ = run(tree, ChildExit(("s",), "error"))
    assert state.root is not None and events == [stop("s"), start("s")]


def test_dynamic_api_results():
    tree = SupervisorModel(children=(ChildModel("a"), ChildModel("t", restart="temporary")))
    assert run(tree, StartChild((), ChildModel("a")))[2] == "already_started"
    assert run(tree, TerminateChild((), "a"), StartChild((), ChildModel("a")))[2] == (
        "already_present"
    )
    assert run(tree, RestartChild((), "a"))[2] == "running"
    assert run(tree, DeleteChild((), "a"))[2] == "running"
    assert run(tree, TerminateChild((), "z"))[2] == "not_found"
    state, events, result = run(tree, TerminateChild((), "a"), RestartChild((), "a"))
    assert (events, result) == ([start("a")], "ok")
    state, events, result = run(tree, TerminateChild((), "a"), DeleteChild((), "a"))
    assert result == "ok" and [c.id for c in state.root.children] == ["t"]
    # A temporary child's spec goes away with its process.
    assert run(tree, TerminateChild((), "t"), RestartChild((), "t"))[2] == "not_found"
    state, events, result = run(tree, StartChild((), ChildModel("n")))
    assert (events, result) == ([start("n")], "ok")
    assert [c.id for c in state.root.children] == ["a", "t", "n"]


def test_simple_one_for_one():
    tree = SupervisorModel(strategy="simple_one_for_one", intensity=5,
                           children=(ChildModel("tpl", restart="transient"),))
    new = StartChild(())
    state, events, result = run(tree, new, new)
    assert events == [start("#1")] and result == "ok"
    for command in (RestartChild((), "#0"), DeleteChild((), "#0"), TerminateChild((), "tpl")):
        assert run(tree, new, command)[2] == "simple_one_for_one"
    state, events, _ = run(tree, new, new, ChildExit(("#0",), "error"))
    assert events == [stop("#0"), start("#0")]
    state, events, _ = run(tree, new, new, ChildExit(("#0",), "normal"))
    assert [c.id for c in state.root.children] == ["#1"]
    state, events, result = run(tree, new, TerminateChild((), "#0"), TerminateChild((), "#0"))
    assert result == "ok"  # OTP: a pid that is no longer alive terminates fine
    state, _, _ = run(tree, new, new)
    final = stop_root(state)
    assert list(final.events) == [Parallel(((("#0",), (stop("#0"),)), (("#1",), (stop("#1"),))))]
    assert set(flatten_events(final.events)) == {stop("#0"), stop("#1")}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_generated_sequences_keep_the_model_consistent(data):
    tree = data.draw(supervisor_trees())
    state, events = initial_state(tree)
    assert {path for _, path in flatten_events(events)} == state.running_workers()
    for command in data.draw(command_sequences(tree)):
        before = state.running_workers()
        outcome = step(state, command)
        state = outcome.state
        after = state.running_workers()
        if isinstance(command, Burst):
            continue  # handling one exit after another may start and stop a child twice
        flat = list(flatten_events(outcome.events))
        assert len(set(flat)) == len(flat)
        assert {p for kind, p in flat if kind == "stop"} <= before
        assert {p for kind, p in flat if kind == "start"} <= after


def test_a_killed_child_supervisor_takes_its_subtree_down_silently():
    inner = SupervisorModel(children=(ChildModel("x"), ChildModel("y")))
    tree = SupervisorModel(
        strategy="one_for_all",
        children=(ChildModel("a"), ChildModel("s", shutdown="infinity", supervisor=inner)),
    )
    _, events, _ = run(tree, ChildExit(("s",), "killed"))
    assert events == [stop("a"), start("a"), start("s", "x"), start("s", "y")]
    _, events, _ = run(tree, ChildExit(("s",), "shutdown"))
    assert events == [stop("s", "y"), stop("s", "x"), stop("a"), start("a"), start("s", "x"),
                      start("s", "y")]


def test_count_children():
    inner = SupervisorModel(children=(ChildModel("x"),))
    tree = SupervisorModel(
        children=(ChildModel("a"), ChildModel("s", shutdown="infinity", supervisor=inner))
    )
    state, _, _ = run(tree, TerminateChild((), "a"))
    assert count_children(state.root) == (2, 1, 1, 1)
    simple = SupervisorModel(strategy="simple_one_for_one", children=(ChildModel("t"),))
    state, _, _ = run(simple, StartChild(()), StartChild(()))
    assert count_children(state.root) == (1, 2, 0, 2)  # one spec: the template


def test_burst_outcomes_depend_on_the_order_exits_arrive():
    tree = SupervisorModel(strategy="rest_for_one", intensity=5, children=ABC)
    state, _ = initial_state(tree)
    outcomes = step_alternatives(state, Burst((("a",), ("b",))))
    # a first: b's exit is consumed by the restart; b first: b restarts, then a's restart
    # terminates the new b and counts a second restart.
    assert sorted(list(o.events) for o in outcomes) == sorted([
        [stop("c"), start("a"), start("b"), start("c")],
        [stop("c"), start("b"), start("c"), stop("c"), stop("b"), start("a"), start("b"),
         start("c")],
    ])
    assert sorted(len(o.state.root.restarts) for o in outcomes) == [1, 2]


def test_burst_in_one_for_all_restarts_once():
    tree = SupervisorModel(strategy="one_for_all", intensity=1, children=ABC)
    state, _ = initial_state(tree)
    (outcome,) = step_alternatives(state, Burst((("a",), ("c",))))
    assert list(outcome.events) == [stop("b"), start("a"), start("b"), start("c")]
    assert outcome.state.root.restarts == [0]
