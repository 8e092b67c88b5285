"""The supervisor's pure decisions (``supervisors/_strategy.py``): no tasks, no clock but the
numbers passed in."""

from __future__ import annotations

import dataclasses

import pytest

import supervisors as sv
from supervisors._strategy import children_to_restart, should_auto_shutdown, should_restart

REASONS = {
    "normal": sv.NORMAL,
    "shutdown": sv.SHUTDOWN,
    "shutdown_detail": sv.Shutdown({"why": "detail"}),
    "killed": sv.KILLED,
    "error": sv.Error(RuntimeError("x")),
}

# OTP's do_restart: permanent always; transient unless normal/shutdown/{shutdown,_};
# temporary never.
MATRIX = {
    sv.PERMANENT: {"normal", "shutdown", "shutdown_detail", "killed", "error"},
    sv.TRANSIENT: {"killed", "error"},
    sv.TEMPORARY: set(),
}


@pytest.mark.parametrize("restart", list(MATRIX))
@pytest.mark.parametrize("reason", list(REASONS))
def test_should_restart_matrix(restart, reason):
    assert should_restart(restart, REASONS[reason]) is (reason in MATRIX[restart])


def test_abnormal_reasons():
    assert [name for name, r in REASONS.items() if r.abnormal] == ["killed", "error"]
    assert sv.Shutdown(None) == sv.SHUTDOWN
    assert sv.Shutdown("a") != sv.Shutdown("b")


# -- RestartIntensity ----------------------------------------------------------------------


def run(intensity: int, period: float, times: list[float]) -> list[bool]:
    state = sv.RestartIntensity(intensity, period)
    allowed = []
    for t in times:
        state, ok = state.add_restart(t)
        allowed.append(ok)
    return allowed


@pytest.mark.parametrize("intensity", [0, 1, 3, 10])
def test_gives_up_exactly_at_intensity_plus_one(intensity):
    # intensity restarts within the period are allowed; the next one is not.
    times = [0.0] * (intensity + 1)
    assert run(intensity, 5.0, times) == [True] * intensity + [False]


def test_restarts_spaced_beyond_the_period_never_give_up():
    assert all(run(1, 5.0, [i * 5.001 for i in range(50)]))


def test_window_edge_a_restart_exactly_period_ago_still_counts():
    # OTP keeps R >= Now - Period.
    assert run(1, 5.0, [0.0, 5.0]) == [True, False]
    assert run(1, 5.0, [0.0, 5.000001]) == [True, True]


def test_window_slides():
    # intensity 2 in 10 s: t=0, 4 ok; t=8 is the third within 10 s; at t=14.5 both are older
    # than 10 s; then 15 is the second and 15.5 the third in the window.
    assert run(2, 10.0, [0, 4, 8]) == [True, True, False]
    assert run(2, 10.0, [0, 4, 14.5, 15, 15.5]) == [True, True, True, True, False]


def test_restart_times_are_kept_newest_first_and_old_ones_dropped():
    state = sv.RestartIntensity(5, 5.0)
    for t in (0.0, 1.0, 2.0, 7.0):
        state, _ = state.add_restart(t)
    assert state.restarts == (7.0, 2.0)


def test_restart_intensity_is_frozen_data():
    state = sv.RestartIntensity(1, 5.0)
    new, _ = state.add_restart(0.0)
    assert state.restarts == () and new.restarts == (0.0,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.intensity = 2  # type: ignore[misc]


# -- children_to_restart -------------------------------------------------------------------

ORDER = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("strategy", "failed", "expected"),
    [
        (sv.ONE_FOR_ONE, "b", ["b"]),
        (sv.SIMPLE_ONE_FOR_ONE, "c", ["c"]),
        (sv.ONE_FOR_ALL, "c", ["a", "b", "c", "d"]),
        (sv.ONE_FOR_ALL, "a", ["a", "b", "c", "d"]),
        (sv.REST_FOR_ONE, "a", ["a", "b", "c", "d"]),
        (sv.REST_FOR_ONE, "b", ["b", "c", "d"]),
        (sv.REST_FOR_ONE, "d", ["d"]),
    ],
)
def test_children_to_restart(strategy, failed, expected):
    assert children_to_restart(strategy, ORDER, failed) == expected


def test_children_to_restart_accepts_any_sequence():
    assert children_to_restart(sv.REST_FOR_ONE, tuple(ORDER), "c") == ["c", "d"]


# -- should_auto_shutdown ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auto", "significant", "others_running", "expected"),
    [
        (sv.NEVER, True, False, False),
        (sv.NEVER, False, False, False),
        (sv.ANY_SIGNIFICANT, False, False, False),
        (sv.ANY_SIGNIFICANT, True, True, True),
        (sv.ANY_SIGNIFICANT, True, False, True),
        (sv.ALL_SIGNIFICANT, False, False, False),
        (sv.ALL_SIGNIFICANT, True, True, False),
        (sv.ALL_SIGNIFICANT, True, False, True),
    ],
)
def test_should_auto_shutdown(auto, significant, others_running, expected):
    assert should_auto_shutdown(auto, significant, others_running) is expected
