"""The differential fuzz: generated trees and commands, the real runtime against the reference
model of OTP's rules (``supervisors/testing/``).

``SUPERVISORS_FUZZ_EXAMPLES`` sets how many scenarios the main test runs (2,000 by default; e.g.
``SUPERVISORS_FUZZ_EXAMPLES=100000 pytest tests/supervisors/test_fuzz.py`` for a long run).
The tests at the end plug deliberately wrong runtimes in and expect the fuzzer to catch them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from unittest import mock

import pytest
from hypothesis import HealthCheck, find, given, settings

import supervisors as sv
from supervisors import _supervisor
from supervisors.testing import (
    Burst,
    ChildExit,
    ChildModel,
    Parallel,
    SupervisorModel,
    events_match,
    run_fuzz,
    run_scenario,
    scenarios,
)

EXAMPLES = int(os.environ.get("SUPERVISORS_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(scenarios())
def test_runtime_agrees_with_the_model(scenario):
    run_scenario(*scenario)


def test_a_fixed_tree_of_ones_own():
    # What a user does: fuzz the commands against the shape of their own tree.
    inner = SupervisorModel("one_for_all", 1, 5, children=(ChildModel("x"), ChildModel("y")))
    tree = SupervisorModel(
        "rest_for_one",
        intensity=2,
        children=(
            ChildModel("db"),
            ChildModel("cache", restart="transient", shutdown="brutal_kill"),
            ChildModel("web", shutdown="infinity", supervisor=inner),
        ),
    )
    run_fuzz(50, trees=tree)


def test_events_match_allows_any_interleaving_of_parallel_branches():
    a, b = ("stop", ("#0", "w")), ("stop", ("#1", "w"))
    a2, b2 = ("stop", ("#0", "v")), ("stop", ("#1", "v"))
    block = Parallel(((("#0",), (a, a2)), (("#1",), (b, b2))))
    assert events_match([block], [a, b, a2, b2])
    assert events_match([block], [b, b2, a, a2])
    assert not events_match([block], [a2, a, b, b2])  # a branch keeps its order
    assert not events_match([block], [a, b, a2])
    assert not events_match([block, ("start", ("x",))], [a, b, a2, b2])


# --- the fuzzer can fail: deliberately wrong runtimes -----------------------------------


def _broken(patch):
    """A runtime: ``sv.open_supervisor`` with one of its decisions replaced while it runs."""

    @asynccontextmanager
    async def open_broken(spec, *, name="root") -> AsyncIterator[sv.SupervisorRef]:
        with patch():
            async with sv.open_supervisor(spec, name=name) as sup:
                yield sup

    return open_broken


_children_to_restart = _supervisor.children_to_restart


def _rest_for_one_restarts_all(strategy, order, failed):
    if strategy is sv.REST_FOR_ONE:
        return list(order)
    return _children_to_restart(strategy, order, failed)


def _intensity_off_by_one(self, now):
    new, _ = _ORIGINAL_ADD_RESTART(self, now)
    return new, len(new.restarts) <= self.intensity + 1


_ORIGINAL_ADD_RESTART = sv.RestartIntensity.add_restart

MUTANTS = {
    "rest_for_one restarts the earlier children too": _broken(
        lambda: mock.patch.object(_supervisor, "children_to_restart", _rest_for_one_restarts_all)
    ),
    "intensity off by one": _broken(
        lambda: mock.patch.object(sv.RestartIntensity, "add_restart", _intensity_off_by_one)
    ),
}


def _fails(runtime):
    def fails(scenario) -> bool:
        try:
            run_scenario(*scenario, runtime=runtime)
        except AssertionError:
            return True
        return False

    return fails


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_the_fuzzer_finds_a_wrong_runtime(mutant):
    tree, commands = find(
        scenarios(),
        _fails(MUTANTS[mutant]),
        settings=settings(
            max_examples=2000,
            deadline=None,
            database=None,
            derandomize=True,  # the same search every run: a fixed, bounded cost in CI
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    # Hypothesis shrinks to a small witness: child exits that make the supervisor restart.
    assert any(isinstance(c, ChildExit | Burst) for c in commands)
    if mutant.startswith("rest_for_one"):
        assert "rest_for_one" in repr((tree, commands))


def test_the_real_runtime_passes_the_mutants_witnesses():
    # The witnesses above are real faults of the mutants, not of the harness.
    tree = SupervisorModel("rest_for_one", 5, children=(ChildModel("a"), ChildModel("b")))
    run_scenario(tree, [ChildExit(("b",), "error")])
    with pytest.raises(AssertionError):
        run_scenario(
            tree, [ChildExit(("b",), "error")],
            runtime=MUTANTS["rest_for_one restarts the earlier children too"],
        )
    tree = SupervisorModel("one_for_one", 0, children=(ChildModel("a"),))
    run_scenario(tree, [ChildExit(("a",), "error")])
    with pytest.raises(AssertionError):
        run_scenario(tree, [ChildExit(("a",), "error")], runtime=MUTANTS["intensity off by one"])
