"""Child specs and supervisor flags (``supervisors/_spec.py``): OTP's defaults, and every
``InvalidChildSpec`` with its exact message. No tasks."""

from __future__ import annotations

import dataclasses

import pytest

import supervisors as sv


def start() -> None:  # a callable to put in specs
    return None


# -- defaults ------------------------------------------------------------------------------


def test_child_spec_defaults_are_otps():
    spec = sv.ChildSpec(id="w", start=start)
    assert spec.args == ()
    assert spec.restart is sv.PERMANENT
    assert spec.kind is sv.WORKER
    assert spec.shutdown == 5.0  # OTP: 5000 ms for a worker
    assert spec.significant is False
    assert spec.mailbox is sv.KEEP


def test_supervisor_child_shutdown_defaults_to_infinity():
    spec = sv.ChildSpec(id="s", start=start, kind=sv.SUPERVISOR)
    assert spec.shutdown == sv.INFINITY


def test_supervisor_flags_defaults_are_otps():
    flags = sv.SupervisorFlags()
    assert flags.strategy is sv.ONE_FOR_ONE
    assert (flags.intensity, flags.period) == (1, 5.0)  # OTP: 1 restart in 5 seconds
    assert flags.auto_shutdown is sv.NEVER
    assert sv.SupervisorSpec().flags == flags
    assert sv.SupervisorSpec().children == ()


@pytest.mark.parametrize("shutdown", [sv.BRUTAL_KILL, sv.INFINITY, 0.001, 1, 30.5])
def test_valid_shutdowns(shutdown):
    assert sv.ChildSpec(id="w", start=start, shutdown=shutdown).shutdown is shutdown


def test_specs_are_frozen_and_children_become_a_tuple():
    spec = sv.ChildSpec(id="w", start=start)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.id = "x"  # type: ignore[misc]
    sup = sv.SupervisorSpec(children=[spec])
    assert sup.children == (spec,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sup.flags = sv.SupervisorFlags()  # type: ignore[misc]


def test_significant_transient_and_temporary_children_are_valid_with_auto_shutdown():
    for restart in (sv.TRANSIENT, sv.TEMPORARY):
        child = sv.ChildSpec(id="w", start=start, restart=restart, significant=True)
        sv.SupervisorSpec(sv.SupervisorFlags(auto_shutdown=sv.ANY_SIGNIFICANT), [child])


def test_invalid_child_spec_is_a_value_error_and_a_supervisors_error():
    assert issubclass(sv.InvalidChildSpec, ValueError)
    assert issubclass(sv.InvalidChildSpec, sv.SupervisorsError)


# -- every invalid child spec, with its message --------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": ["x"]}, "invalid child id ['x']: ids must be hashable"),
        ({"start": 5}, "child 'w': start 5 is not callable"),
        ({"args": [1]}, "child 'w': args must be a tuple, not [1]"),
        ({"restart": "permanent"}, "child 'w': invalid restart type 'permanent'"),
        ({"kind": "worker"}, "child 'w': invalid child kind 'worker'"),
        ({"significant": 1}, "child 'w': significant must be a bool"),
        ({"mailbox": "keep"}, "child 'w': invalid mailbox policy 'keep'"),
        (
            {"significant": True},
            "child 'w': bad combination: a permanent child cannot be significant",
        ),
        *(
            (
                {"shutdown": bad},
                f"child 'w': invalid shutdown {bad!r}; "
                "use BRUTAL_KILL, INFINITY or a number of seconds > 0",
            )
            for bad in (0, -1, -0.5, True, "5", None, float("nan"), -float("inf"))
        ),
    ],
)
def test_invalid_child_spec(kwargs, message):
    args = {"id": "w", "start": start, **kwargs}
    with pytest.raises(sv.InvalidChildSpec) as info:
        sv.ChildSpec(**args)
    assert str(info.value) == message


# -- every invalid flag --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "one_for_one"}, "invalid strategy 'one_for_one'"),
        ({"intensity": -1}, "invalid intensity -1: an int >= 0"),
        ({"intensity": 1.0}, "invalid intensity 1.0: an int >= 0"),
        ({"intensity": True}, "invalid intensity True: an int >= 0"),
        ({"period": 0}, "invalid period 0: seconds > 0"),
        ({"period": -5.0}, "invalid period -5.0: seconds > 0"),
        ({"period": False}, "invalid period False: seconds > 0"),
        ({"period": "5"}, "invalid period '5': seconds > 0"),
        ({"auto_shutdown": "never"}, "invalid auto_shutdown 'never'"),
    ],
)
def test_invalid_supervisor_flags(kwargs, message):
    with pytest.raises(sv.InvalidChildSpec) as info:
        sv.SupervisorFlags(**kwargs)
    assert str(info.value) == message


def test_intensity_zero_is_valid():
    assert sv.SupervisorFlags(intensity=0).intensity == 0


# -- every invalid supervisor spec ---------------------------------------------------------


def child(child_id="w", **kwargs):
    return sv.ChildSpec(id=child_id, start=start, **kwargs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: sv.SupervisorSpec(flags="one_for_one"),  # type: ignore[arg-type]
            "flags must be SupervisorFlags, not 'one_for_one'",
        ),
        (
            lambda: sv.SupervisorSpec(children=[("w", start)]),  # type: ignore[list-item]
            f"not a ChildSpec: {('w', start)!r}",
        ),
        (
            lambda: sv.SupervisorSpec(children=[child("a"), child("b"), child("a")]),
            "duplicate child id 'a'",
        ),
        (
            lambda: sv.SupervisorSpec(
                children=[child(restart=sv.TRANSIENT, significant=True)]
            ),
            "child 'w': bad combination: significant with auto_shutdown NEVER",
        ),
        (
            lambda: sv.SupervisorSpec(sv.SupervisorFlags(strategy=sv.SIMPLE_ONE_FOR_ONE), []),
            "a simple_one_for_one supervisor has exactly one child spec (the template), got 0",
        ),
        (
            lambda: sv.SupervisorSpec(
                sv.SupervisorFlags(strategy=sv.SIMPLE_ONE_FOR_ONE), [child("a"), child("b")]
            ),
            "a simple_one_for_one supervisor has exactly one child spec (the template), got 2",
        ),
    ],
)
def test_invalid_supervisor_spec(make, message):
    with pytest.raises(sv.InvalidChildSpec) as info:
        make()
    assert str(info.value) == message
