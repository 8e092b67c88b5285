"""The supervisor behaviour (``supervisors/_supervisor.py``), after OTP's
``lib/stdlib/test/supervisor_SUITE.erl``: the restart-type x exit-reason matrix, restart
strategies and escalation, start and stop order, the dynamic API and its errors, shutdown modes,
significant children, the hanging restart loop, mailboxes across restarts, no orphans and the
snapshot. Every test runs on the autojump clock: time passes only when all tasks sleep."""

from __future__ import annotations

import contextvars
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

import supervisors as sv

settle = trio.testing.wait_all_tasks_blocked


class Crash(Exception):
    pass


@dataclass
class World:
    """What the test workers share with the test: a log and knobs."""

    log: list[tuple] = field(default_factory=list)
    starts: Counter = field(default_factory=Counter)
    fail_start: dict[str, int] = field(default_factory=dict)  # name -> failures left (-1: all)
    start_delay: dict[str, float] = field(default_factory=dict)
    stop_delay: dict[str, float] = field(default_factory=dict)

    def events(self, kind: str) -> list[str]:
        return [e[1] for e in self.log if e[0] == kind]


class Worker(sv.Actor):
    """A child that logs its start and stop and does what it is told."""

    def __init__(self, world: World, name: str, *extra: Any) -> None:
        super().__init__()
        self.world, self.name, self.extra = world, name, extra

    async def on_start(self) -> None:
        world = self.world
        delay = world.start_delay.get(self.name)
        if delay:
            await trio.sleep(delay)
        left = world.fail_start.get(self.name, 0)
        if left:
            world.fail_start[self.name] = left - 1 if left > 0 else left
            world.log.append(("start_failed", self.name))
            raise Crash(f"{self.name} cannot start")
        world.starts[self.name] += 1
        self.incarnation = world.starts[self.name]
        world.log.append(("start", self.name))

    async def receive(self, message: Any) -> Any:
        match message:
            case "who":
                return (self.name, self.incarnation, self.extra)
            case ("exit", reason):
                raise sv.Exit(reason)
            case "crash":
                raise Crash(self.name)
            case ("crash_after", seconds):
                await trio.sleep(seconds)
                raise Crash(self.name)
            case ("sleep", seconds):
                await trio.sleep(seconds)
                return "slept"
            case ("echo", x):
                return (x, self.incarnation)
        return None

    async def on_stop(self, reason: sv.ExitReason) -> None:
        # A dynamic child can be told apart by a first extra arg naming it.
        key = self.extra[0] if self.extra and isinstance(self.extra[0], str) else self.name
        delay = self.world.stop_delay.get(key, self.world.stop_delay.get(self.name))
        if delay:
            await trio.sleep(delay)
        self.world.log.append(("stop", self.name, reason))


def worker(world: World, name: str, **kwargs: Any) -> sv.ChildSpec:
    return sv.ChildSpec(id=name, start=Worker, args=(world, name), **kwargs)


def spec(*children: sv.ChildSpec, **flags: Any) -> sv.SupervisorSpec:
    return sv.SupervisorSpec(sv.SupervisorFlags(**flags), children)


def sup_child(name: str, child_spec: sv.SupervisorSpec, **kwargs: Any) -> sv.ChildSpec:
    return sv.ChildSpec(id=name, start=lambda: child_spec, kind=sv.SUPERVISOR, **kwargs)


REASONS: dict[str, Any] = {
    "normal": sv.NORMAL,
    "shutdown": sv.SHUTDOWN,
    "shutdown_detail": sv.Shutdown("detail"),
    "killed": sv.KILLED,
    "error": "crash",
}


async def make_exit(ref: sv.ActorRef, how: str) -> None:
    """Make the child behind ``ref`` exit with the reason named ``how`` and let the supervisor
    react."""
    if how == "killed":
        ref.kill()
    elif how == "error":
        ref.send_nowait("crash")
    else:
        ref.send_nowait(("exit", REASONS[how]))
    await settle()


def states(sup: sv.SupervisorRef) -> list[tuple]:
    return [(c.id, c.state) for c in sup.which_children()]


def counts(sup: sv.SupervisorRef) -> list[int]:
    c = sup.count_children()
    return [c.specs, c.active, c.supervisors, c.workers]


def task_names() -> list[str]:
    """Every task now running, by name (for the no-orphans checks)."""
    names = []

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                names.append(child.name)
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return names


# -- start and stop order ------------------------------------------------------------------


async def test_children_start_in_order_and_stop_in_reverse(autojump_clock):
    world = World()
    inner = spec(worker(world, "x"), worker(world, "y"))
    tree = spec(worker(world, "a"), sup_child("s", inner), worker(world, "b"))
    async with sv.open_supervisor(tree) as sup:
        # start_child returns only when all are up: the log is complete already.
        assert world.events("start") == ["a", "x", "y", "b"]
        assert states(sup) == [("a", "running"), ("s", "running"), ("b", "running")]
    assert world.events("stop") == ["b", "y", "x", "a"]
    assert await sup.wait() == sv.SHUTDOWN
    assert not sup.is_alive()


async def test_start_failure_stops_the_started_children_and_fails_the_supervisor(autojump_clock):
    world = World(fail_start={"c": -1})
    tree = spec(worker(world, "a"), worker(world, "b"), worker(world, "c"), worker(world, "d"))
    with pytest.raises(sv.StartFailed) as info:
        async with sv.open_supervisor(tree, name="top"):
            pytest.fail("the block must not run")
    assert world.events("start") == ["a", "b"]
    assert world.events("stop") == ["b", "a"]
    reason = info.value.reason
    assert isinstance(reason, sv.Shutdown)
    tag, child_id, child_reason = reason.detail
    assert (tag, child_id) == ("failed_to_start_child", "c")
    assert isinstance(child_reason, sv.Error) and isinstance(child_reason.exception, Crash)
    assert not any(n.startswith("top") for n in task_names())


async def test_open_supervisor_needs_a_supervisor_spec():
    with pytest.raises(sv.InvalidChildSpec):
        async with sv.open_supervisor([]):  # type: ignore[arg-type]
            pass


# -- the restart-type x exit-reason matrix --------------------------------------------------

RESTARTED = {
    "permanent": {"normal", "shutdown", "shutdown_detail", "killed", "error"},
    "transient": {"killed", "error"},
    "temporary": set(),
}


@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
@pytest.mark.parametrize("how", list(REASONS))
async def test_restart_type_x_exit_reason(autojump_clock, restart, how):
    world = World()
    child = worker(world, "c", restart=sv.Restart(restart))
    async with sv.open_supervisor(spec(child, intensity=5)) as sup:
        ref = sup.whereis("c")
        assert ref is not None
        await make_exit(ref, how)
        if how in RESTARTED[restart]:
            assert world.starts["c"] == 2
            assert states(sup) == [("c", "running")]
            assert counts(sup) == [1, 1, 0, 1]
            assert sup.whereis("c") is ref  # the ref is stable across restarts
            assert await ref.call("who") == ("c", 2, ())
        elif restart == "temporary":
            assert world.starts["c"] == 1
            assert states(sup) == [] and counts(sup) == [0, 0, 0, 0]
            assert not ref.is_alive()
        else:  # transient, normal exit: kept as a terminated spec
            assert states(sup) == [("c", "terminated")]
            assert counts(sup) == [1, 0, 0, 1]
            assert not ref.is_alive()
            assert await sup.restart_child("c") is ref
            assert await ref.call("who") == ("c", 2, ())


async def test_stopped_children_ran_on_stop_with_the_reason_killed_did_not(autojump_clock):
    world = World()
    async with sv.open_supervisor(spec(worker(world, "c"), intensity=5)) as sup:
        ref = sup.whereis("c")
        await make_exit(ref, "shutdown_detail")
        await make_exit(ref, "killed")
        await make_exit(ref, "error")
    stops = [e for e in world.log if e[0] == "stop"]
    assert [e[2] for e in stops[:1]] == [sv.Shutdown("detail")]
    assert isinstance(stops[1][2], sv.Error)  # the killed incarnation left no stop
    assert stops[2][2] == sv.SHUTDOWN  # the supervisor's own shutdown at the end


# -- strategies ----------------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_failed_child(autojump_clock):
    world = World()
    tree = spec(worker(world, "a"), worker(world, "b"), worker(world, "c"), intensity=2)
    async with sv.open_supervisor(tree) as sup:
        await make_exit(sup.whereis("b"), "error")
        assert world.events("start") == ["a", "b", "c", "b"]
        assert counts(sup) == [3, 3, 0, 3]


async def test_one_for_all_restarts_all_stopping_the_others_in_reverse(autojump_clock):
    world = World()
    tree = spec(
        worker(world, "a"), worker(world, "b"), worker(world, "c"),
        strategy=sv.ONE_FOR_ALL, intensity=2,
    )
    async with sv.open_supervisor(tree) as sup:
        old = [sup.whereis(i) for i in "abc"]
        world.log.clear()
        await make_exit(old[1], "error")
        assert [e[:2] for e in world.log] == [
            ("stop", "b"),  # the crash's own on_stop
            ("stop", "c"), ("stop", "a"),
            ("start", "a"), ("start", "b"), ("start", "c"),
        ]
        assert [sup.whereis(i) for i in "abc"] == old  # refs are stable
        assert counts(sup) == [3, 3, 0, 3]


async def test_rest_for_one_restarts_the_failed_child_and_those_after_it(autojump_clock):
    world = World()
    tree = spec(
        worker(world, "a"), worker(world, "b"), worker(world, "c"), worker(world, "d"),
        strategy=sv.REST_FOR_ONE, intensity=2,
    )
    async with sv.open_supervisor(tree) as sup:
        world.log.clear()
        await make_exit(sup.whereis("b"), "killed")
        assert [e[:2] for e in world.log] == [
            ("stop", "d"), ("stop", "c"),
            ("start", "b"), ("start", "c"), ("start", "d"),
        ]
        assert world.starts["a"] == 1


@pytest.mark.parametrize("strategy", [sv.ONE_FOR_ALL, sv.REST_FOR_ONE])
async def test_temporary_bystander_is_removed_not_restarted(autojump_clock, strategy):
    # OTP's temporary_bystander: a temporary child stopped by a multi-child restart is gone.
    world = World()
    tree = spec(
        worker(world, "perm"), worker(world, "temp", restart=sv.TEMPORARY),
        strategy=strategy, intensity=2,
    )
    async with sv.open_supervisor(tree) as sup:
        temp = sup.whereis("temp")
        await make_exit(sup.whereis("perm"), "normal")
        assert sup.is_alive()
        assert states(sup) == [("perm", "running")]
        assert world.starts["temp"] == 1
        assert not temp.is_alive()


async def test_one_for_all_also_restarts_a_child_stopped_by_terminate_child(autojump_clock):
    # OTP's restart_multiple_children starts every child of the scope, pid or not.
    world = World()
    tree = spec(worker(world, "a"), worker(world, "b"), strategy=sv.ONE_FOR_ALL, intensity=2)
    async with sv.open_supervisor(tree) as sup:
        await sup.terminate_child("b")
        assert states(sup) == [("a", "running"), ("b", "terminated")]
        await make_exit(sup.whereis("a"), "error")
        assert states(sup) == [("a", "running"), ("b", "running")]
        assert world.starts["b"] == 2


async def test_one_for_all_other_child_fails_restart(autojump_clock):
    # OTP's one_for_all_other_child_fails_restart: b's start fails once during the restart;
    # the supervisor tries again (terminating the restarted a) and then both run.
    world = World()
    tree = spec(worker(world, "a"), worker(world, "b"), strategy=sv.ONE_FOR_ALL, intensity=3)
    async with sv.open_supervisor(tree) as sup:
        world.fail_start["b"] = 1
        world.log.clear()
        await make_exit(sup.whereis("a"), "error")
        assert [e[:2] for e in world.log] == [
            ("stop", "a"), ("stop", "b"),
            ("start", "a"), ("start_failed", "b"),
            ("stop", "a"),
            ("start", "a"), ("start", "b"),
        ]
        assert states(sup) == [("a", "running"), ("b", "running")]


async def test_rest_for_one_other_child_fails_restart(autojump_clock):
    world = World()
    tree = spec(worker(world, "a"), worker(world, "b"), strategy=sv.REST_FOR_ONE, intensity=3)
    async with sv.open_supervisor(tree) as sup:
        world.fail_start["b"] = 1
        world.log.clear()
        await make_exit(sup.whereis("a"), "error")
        # The retry restarts from b: a, started, is not restarted again.
        assert [e[:2] for e in world.log] == [
            ("stop", "a"), ("stop", "b"),
            ("start", "a"), ("start_failed", "b"),
            ("start", "b"),
        ]


async def test_simple_one_for_one_children_get_the_extra_args(autojump_clock):
    world = World()
    tree = spec(worker(world, "t"), strategy=sv.SIMPLE_ONE_FOR_ONE, intensity=2)
    async with sv.open_supervisor(tree) as sup:
        a = await sup.start_child(("x", 1))
        b = await sup.start_child()
        assert await a.call("who") == ("t", 1, ("x", 1))
        assert await b.call("who") == ("t", 2, ())
        await make_exit(a, "error")  # one_for_one among dynamic children
        assert await a.call("who") == ("t", 3, ("x", 1))
        assert counts(sup) == [1, 2, 0, 2]
        assert {c.ref for c in sup.which_children()} == {a, b}
        assert all(c.id is None for c in sup.which_children())


# -- intensity and escalation ----------------------------------------------------------------

STRATEGIES = [sv.ONE_FOR_ONE, sv.ONE_FOR_ALL, sv.REST_FOR_ONE, sv.SIMPLE_ONE_FOR_ONE]


async def start_two(sup: sv.SupervisorRef, strategy: sv.Strategy) -> list[sv.ActorRef]:
    if strategy is sv.SIMPLE_ONE_FOR_ONE:
        return [await sup.start_child(("1",)), await sup.start_child(("2",))]
    return [sup.whereis("a"), sup.whereis("b")]


def two_children(world: World, strategy: sv.Strategy, intensity: int) -> sv.SupervisorSpec:
    if strategy is sv.SIMPLE_ONE_FOR_ONE:
        return spec(worker(world, "t"), strategy=strategy, intensity=intensity, period=10)
    return spec(
        worker(world, "a"), worker(world, "b"),
        strategy=strategy, intensity=intensity, period=10,
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_intensity_exceeded_stops_all_in_reverse_and_exits_shutdown(
    autojump_clock, strategy
):
    world = World()
    async with sv.open_supervisor(two_children(world, strategy, intensity=2)) as sup:
        refs = await start_two(sup, strategy)
        await make_exit(refs[0], "error")
        await make_exit(refs[0], "error")
        assert sup.is_alive()
        world.log.clear()
        await make_exit(refs[1], "error")  # the third restart within 10 s: give up
        assert not sup.is_alive()
        assert await sup.wait() == sv.SHUTDOWN
        assert world.events("start") == []
        stopped = world.events("stop")
        if strategy is sv.SIMPLE_ONE_FOR_ONE:
            assert stopped == ["t", "t"]  # the crash, then the other one
        else:
            assert stopped == ["b", "a"]
        assert not refs[0].is_alive() and not refs[1].is_alive()
        with pytest.raises(sv.ActorDeadError):
            await refs[0].call("who")
        with pytest.raises(sv.SupervisorGone):
            await sup.restart_child("a")


async def test_intensity_zero_gives_up_at_the_first_restart(autojump_clock):
    world = World()
    async with sv.open_supervisor(spec(worker(world, "a"), intensity=0)) as sup:
        await make_exit(sup.whereis("a"), "killed")
        assert await sup.wait() == sv.SHUTDOWN


async def test_restarts_spaced_beyond_the_period_never_give_up(autojump_clock):
    # OTP's multiple_restarts: 1 restart per 1 s, crashes 2.1 s apart.
    world = World()
    async with sv.open_supervisor(spec(worker(world, "a"), intensity=1, period=1)) as sup:
        for _ in range(5):
            await make_exit(sup.whereis("a"), "error")
            await trio.sleep(2.1)
        assert sup.is_alive() and world.starts["a"] == 6


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_escalation_a_child_supervisor_that_gives_up_is_restarted_by_its_parent(
    autojump_clock, strategy
):
    world = World()
    inner = two_children(world, strategy, intensity=0)
    tree = spec(worker(world, "first"), sup_child("inner", inner), intensity=1, period=10)
    async with sv.open_supervisor(tree) as root:
        inner_sup = root.child_supervisor("inner")
        assert inner_sup is not None
        refs = await start_two(inner_sup, strategy)
        inner_ref = root.whereis("inner")
        await make_exit(refs[0], "error")  # inner gives up -> exits SHUTDOWN -> restarted
        assert not inner_sup.is_alive()
        assert await inner_sup.wait() == sv.SHUTDOWN
        assert root.is_alive()
        assert root.whereis("inner") is inner_ref  # same ref, new incarnation
        new_inner = root.child_supervisor("inner")
        assert new_inner is not None and new_inner.is_alive()
        # Dynamic children are not restarted with their supervisor (OTP's tree test).
        if strategy is sv.SIMPLE_ONE_FOR_ONE:
            assert new_inner.which_children() == []
        else:
            assert states(new_inner) == [("a", "running"), ("b", "running")]
        assert root.snapshot().children[1].restarts == 1
        # The second escalation exceeds the root's intensity: the root gives up in turn.
        refs = await start_two(new_inner, strategy)
        world.log.clear()
        await make_exit(refs[0], "error")
        assert await root.wait() == sv.SHUTDOWN
        assert world.events("stop")[-1] == "first"  # the root stopped its other child


async def test_escalation_of_a_transient_child_supervisor_stops_there(autojump_clock):
    # A supervisor that gives up exits SHUTDOWN: not abnormal, so a transient parent spec
    # does not restart it.
    world = World()
    inner = spec(worker(world, "a"), intensity=0)
    tree = spec(sup_child("inner", inner, restart=sv.TRANSIENT), intensity=5)
    async with sv.open_supervisor(tree) as root:
        await make_exit(root.child_supervisor("inner").whereis("a"), "error")
        assert states(root) == [("inner", "terminated")]
        assert root.is_alive()


# -- which_children, count_children ---------------------------------------------------------


async def test_count_children_and_which_children_static(autojump_clock):
    world = World()
    inner = spec(worker(world, "x"))
    tree = spec(worker(world, "a"), sup_child("s", inner), worker(world, "b"), intensity=5)
    async with sv.open_supervisor(tree) as sup:
        assert counts(sup) == [3, 3, 1, 2]
        rows = sup.which_children()
        assert [(r.id, r.kind, r.state) for r in rows] == [
            ("a", sv.WORKER, "running"),
            ("s", sv.SUPERVISOR, "running"),
            ("b", sv.WORKER, "running"),
        ]
        assert rows[0].ref is sup.whereis("a")
        await sup.terminate_child("b")
        assert counts(sup) == [3, 2, 1, 2]
        assert sup.which_children()[2] == sv.ChildInfo("b", None, sv.WORKER, "terminated")
        await sup.delete_child("b")
        assert counts(sup) == [2, 2, 1, 1]


async def test_count_children_simple_one_for_one_many(autojump_clock):
    # OTP's count_children: 1000 then 2000 temporary dynamic children.
    world = World()
    tree = spec(worker(world, "t", restart=sv.TEMPORARY), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        assert counts(sup) == [1, 0, 0, 0]
        refs = [await sup.start_child() for _ in range(1000)]
        assert counts(sup) == [1, 1000, 0, 1000]
        assert len(sup.which_children()) == 1000
        refs += [await sup.start_child() for _ in range(1000)]
        assert counts(sup) == [1, 2000, 0, 2000]
        for ref in refs:
            ref.kill()
        await settle()
        assert counts(sup) == [1, 0, 0, 0]
        assert sup.which_children() == []


# -- the dynamic API and its errors ---------------------------------------------------------


async def test_child_adm(autojump_clock):
    # OTP's child_adm and extra_return.
    world = World()
    child = worker(world, "c")
    async with sv.open_supervisor(spec(child)) as sup:
        ref = sup.whereis("c")
        with pytest.raises(sv.AlreadyStarted) as info:
            await sup.start_child(child)
        assert info.value.ref is ref
        for op in (sup.terminate_child, sup.restart_child, sup.delete_child):
            with pytest.raises(sv.NotFound):
                await op("hej")
        with pytest.raises(sv.Running):
            await sup.restart_child("c")
        with pytest.raises(sv.Running):
            await sup.delete_child("c")
        # Terminate by ref is only for simple_one_for_one (OTP: not_found).
        with pytest.raises(sv.NotFound):
            await sup.terminate_child(ref)

        await sup.terminate_child("c")
        assert world.log[-1] == ("stop", "c", sv.SHUTDOWN)
        assert states(sup) == [("c", "terminated")] and counts(sup) == [1, 0, 0, 1]
        await sup.terminate_child("c")  # terminating a terminated child is ok
        with pytest.raises(sv.AlreadyPresent):
            await sup.start_child(child)

        assert await sup.restart_child("c") is ref
        assert counts(sup) == [1, 1, 0, 1]
        await sup.terminate_child("c")
        await sup.delete_child("c")
        with pytest.raises(sv.NotFound):
            await sup.restart_child("c")
        assert sup.which_children() == [] and counts(sup) == [0, 0, 0, 0]
        new = await sup.start_child(child)
        assert new is not ref and counts(sup) == [1, 1, 0, 1]


async def test_child_adm_simple(autojump_clock):
    world = World()
    tree = spec(worker(world, "t"), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        assert sup.which_children() == [] and counts(sup) == [1, 0, 0, 0]
        a = await sup.start_child()
        b = await sup.start_child()
        assert counts(sup) == [1, 2, 0, 2]
        with pytest.raises(sv.SimpleOneForOneError):
            await sup.terminate_child("t")
        await sup.terminate_child(a)
        assert counts(sup) == [1, 1, 0, 1] and not a.is_alive()
        await sup.terminate_child(a)  # a gone child: ok, as in OTP
        async with trio.open_nursery() as nursery:
            stranger = sv.spawn(nursery, Worker(world, "stranger"))
            with pytest.raises(sv.NotFound):
                await sup.terminate_child(stranger)
            assert stranger.is_alive()
            stranger.stop()
        with pytest.raises(sv.SimpleOneForOneError):
            await sup.restart_child(b)
        with pytest.raises(sv.SimpleOneForOneError):
            await sup.delete_child(b)
        with pytest.raises(sv.InvalidChildSpec):
            await sup.start_child(worker(world, "not extra args"))


async def test_start_child_errors(autojump_clock):
    world = World(fail_start={"bad": -1})
    async with sv.open_supervisor(spec(intensity=5, auto_shutdown=sv.NEVER)) as sup:
        with pytest.raises(sv.StartFailed) as info:
            await sup.start_child(worker(world, "bad"))
        assert info.value.child_id == "bad"
        assert isinstance(info.value.reason, sv.Error)
        assert sup.which_children() == []  # a failed start leaves no spec (OTP)

        def broken() -> sv.Actor:
            raise Crash("in start")

        with pytest.raises(sv.StartFailed) as info:
            await sup.start_child(sv.ChildSpec(id="broken", start=broken))
        assert isinstance(info.value.reason.exception, Crash)
        with pytest.raises(sv.StartFailed) as info:
            await sup.start_child(sv.ChildSpec(id="wrong", start=lambda: 42))
        assert isinstance(info.value.reason.exception, TypeError)
        with pytest.raises(sv.StartFailed):  # a worker spec whose start gives a SupervisorSpec
            await sup.start_child(sv.ChildSpec(id="w", start=lambda: spec()))
        with pytest.raises(sv.InvalidChildSpec):
            await sup.start_child("not a spec")
        with pytest.raises(sv.InvalidChildSpec, match="significant with auto_shutdown NEVER"):
            await sup.start_child(worker(world, "sig", restart=sv.TRANSIENT, significant=True))
        assert sup.is_alive()  # bad requests never crash the supervisor


async def test_start_failed_for_simple_one_for_one(autojump_clock):
    world = World(fail_start={"t": 1})
    tree = spec(worker(world, "t"), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        with pytest.raises(sv.StartFailed):
            await sup.start_child()
        assert counts(sup) == [1, 0, 0, 0]
        assert await (await sup.start_child()).call("who") == ("t", 1, ())


async def test_restart_child_start_failure_keeps_the_child_terminated(autojump_clock):
    world = World()
    async with sv.open_supervisor(spec(worker(world, "c"))) as sup:
        ref = sup.whereis("c")
        await sup.terminate_child("c")
        world.fail_start["c"] = 1
        with pytest.raises(sv.StartFailed):
            await sup.restart_child("c")
        assert states(sup) == [("c", "terminated")]
        assert not ref.is_alive()
        assert await sup.restart_child("c") is ref
        assert ref.is_alive()


async def test_hanging_restart_loop(autojump_clock):
    # OTP's hanging_restart_loop: a child whose start keeps failing is "restarting"; the API
    # still answers between attempts; terminate_child ends the loop; otherwise intensity does.
    world = World(start_delay={"c": 1.0})
    async with sv.open_supervisor(spec(worker(world, "c"), intensity=8, period=100)) as sup:
        ref = sup.whereis("c")
        world.fail_start["c"] = -1
        ref.send_nowait("crash")
        await trio.sleep(2.5)  # two failed attempts so far
        assert states(sup) == [("c", "restarting")]
        assert counts(sup) == [1, 0, 0, 1]
        assert ref.is_alive()  # mail waits for the next incarnation
        with pytest.raises(sv.AlreadyPresent):
            await sup.start_child(worker(world, "c"))
        with pytest.raises(sv.Restarting):
            await sup.restart_child("c")
        with pytest.raises(sv.Restarting):
            await sup.delete_child("c")
        await sup.terminate_child("c")
        assert states(sup) == [("c", "terminated")]
        attempts = world.events("start_failed")
        await trio.sleep(10)
        assert world.events("start_failed") == attempts  # the loop is over
        assert sup.is_alive()

        world.fail_start["c"] = 0
        await sup.restart_child("c")
        world.fail_start["c"] = -1
        ref.send_nowait("crash")
        await trio.sleep(100)  # attempts 1 s apart: the 9th restart within 100 s gives up
        assert await sup.wait() == sv.SHUTDOWN
        # Every failed attempt was a restart (restart_child is not one): 8 in all.
        assert len(world.events("start_failed")) == 8


async def test_hanging_restart_loop_simple(autojump_clock):
    world = World(start_delay={"t": 1.0})
    tree = spec(worker(world, "t"), strategy=sv.SIMPLE_ONE_FOR_ONE, intensity=8, period=100)
    async with sv.open_supervisor(tree) as sup:
        ref = await sup.start_child()
        world.fail_start["t"] = -1
        ref.send_nowait("crash")
        await trio.sleep(2.5)
        assert [(c.ref, c.state) for c in sup.which_children()] == [(None, "restarting")]
        assert counts(sup) == [1, 0, 0, 1]
        await sup.terminate_child(ref)
        assert sup.which_children() == []
        assert not ref.is_alive()


async def test_terminated_child_refuses_mail_and_restart_reopens_it(autojump_clock):
    world = World()
    async with sv.open_supervisor(spec(worker(world, "c"))) as sup:
        ref = sup.whereis("c")
        pending = []

        async def caller():
            try:
                await ref.call(("echo", 1), timeout=None)
            except sv.ActorDeadError as e:
                pending.append(e.reason)

        ref.send_nowait(("sleep", 1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await settle()
            await sup.terminate_child("c")  # the queued call fails, it does not hang
        assert pending == [sv.SHUTDOWN]
        with pytest.raises(sv.ActorDeadError):
            ref.send_nowait("x")
        await sup.restart_child("c")
        assert await ref.call(("echo", 2)) == (2, 2)


async def test_unexpected_messages_do_not_crash_the_supervisor(autojump_clock):
    async with sv.open_supervisor(spec()) as sup:
        assert await sup.ref.call("hello") is None
        sup.ref.send_nowait(("start_child", None))
        await settle()
        assert sup.is_alive()


# -- significant children and auto_shutdown -------------------------------------------------


@pytest.mark.parametrize("restart", [sv.TRANSIENT, sv.TEMPORARY])
async def test_any_significant_shuts_down_when_one_exits_for_good(autojump_clock, restart):
    world = World()
    tree = spec(
        worker(world, "plain"),
        worker(world, "sig1", restart=restart, significant=True),
        worker(world, "sig2", restart=restart, significant=True),
        auto_shutdown=sv.ANY_SIGNIFICANT,
    )
    async with sv.open_supervisor(tree) as sup:
        await make_exit(sup.whereis("sig1"), "normal")
        assert await sup.wait() == sv.SHUTDOWN
        assert world.events("stop")[-2:] == ["sig2", "plain"]


async def test_all_significant_shuts_down_when_the_last_one_exits(autojump_clock):
    world = World()
    tree = spec(
        worker(world, "plain"),
        worker(world, "sig1", restart=sv.TRANSIENT, significant=True),
        worker(world, "sig2", restart=sv.TEMPORARY, significant=True),
        auto_shutdown=sv.ALL_SIGNIFICANT,
    )
    async with sv.open_supervisor(tree) as sup:
        await make_exit(sup.whereis("sig2"), "error")  # temporary: gone for good
        assert sup.is_alive()
        await make_exit(sup.whereis("sig1"), "shutdown")
        assert await sup.wait() == sv.SHUTDOWN


async def test_a_restarted_significant_child_does_not_shut_down(autojump_clock):
    world = World()
    tree = spec(
        worker(world, "sig", restart=sv.TRANSIENT, significant=True),
        auto_shutdown=sv.ANY_SIGNIFICANT, intensity=3,
    )
    async with sv.open_supervisor(tree) as sup:
        await make_exit(sup.whereis("sig"), "error")
        assert sup.is_alive() and world.starts["sig"] == 2
        await sup.terminate_child("sig")  # terminate_child never triggers auto_shutdown
        assert sup.is_alive()


async def test_non_significant_exits_never_shut_down(autojump_clock):
    world = World()
    tree = spec(
        worker(world, "t", restart=sv.TEMPORARY),
        worker(world, "sig", restart=sv.TRANSIENT, significant=True),
        auto_shutdown=sv.ANY_SIGNIFICANT,
    )
    async with sv.open_supervisor(tree) as sup:
        await make_exit(sup.whereis("t"), "normal")
        assert sup.is_alive()


async def test_all_significant_simple_one_for_one(autojump_clock):
    world = World()
    tree = spec(
        worker(world, "t", restart=sv.TEMPORARY, significant=True),
        strategy=sv.SIMPLE_ONE_FOR_ONE, auto_shutdown=sv.ALL_SIGNIFICANT,
    )
    async with sv.open_supervisor(tree) as sup:
        a, b = await sup.start_child(), await sup.start_child()
        await make_exit(a, "normal")
        assert sup.is_alive()
        await make_exit(b, "normal")
        assert await sup.wait() == sv.SHUTDOWN


async def test_significant_child_shutting_down_escalates_as_shutdown(autojump_clock):
    # An auto_shutdown supervisor exits SHUTDOWN; a transient parent spec leaves it stopped.
    world = World()
    inner = spec(
        worker(world, "job", restart=sv.TRANSIENT, significant=True),
        auto_shutdown=sv.ANY_SIGNIFICANT,
    )
    async with sv.open_supervisor(spec(sup_child("inner", inner, restart=sv.TRANSIENT))) as root:
        await make_exit(root.child_supervisor("inner").whereis("job"), "normal")
        assert states(root) == [("inner", "terminated")]


# -- shutdown modes --------------------------------------------------------------------------


async def test_shutdown_brutal_kill_skips_on_stop(autojump_clock):
    world = World(stop_delay={"c": 1})
    async with sv.open_supervisor(spec(worker(world, "c", shutdown=sv.BRUTAL_KILL))) as sup:
        ref = sup.whereis("c")
        monitor_reason = []

        class Watcher(sv.Actor):
            async def on_start(self):
                self.monitor(ref)

            async def receive(self, message):
                if isinstance(message, sv.Down):
                    monitor_reason.append(message.reason)

        async with trio.open_nursery() as nursery:
            w = await sv.spawn_started(nursery, Watcher())
            await sup.terminate_child("c")
            await settle()
            w.stop()
        assert monitor_reason == [sv.KILLED]
        assert world.events("stop") == []
        assert trio.current_time() == 0


async def test_shutdown_timeout_that_expires_kills(autojump_clock):
    world = World(stop_delay={"slow": 10, "quick": 1})
    tree = spec(worker(world, "slow", shutdown=2.0), worker(world, "quick", shutdown=2.0))
    async with sv.open_supervisor(tree):
        pass
    # quick stops in 1 s (SHUTDOWN, on_stop done); slow is killed after its 2 s.
    assert world.log[-1] == ("stop", "quick", sv.SHUTDOWN)
    assert "slow" not in world.events("stop")
    assert trio.current_time() == pytest.approx(3.0)


async def test_shutdown_infinity_waits_for_on_stop(autojump_clock):
    world = World(stop_delay={"c": 1000})
    async with sv.open_supervisor(spec(worker(world, "c", shutdown=sv.INFINITY))):
        pass
    assert world.log[-1] == ("stop", "c", sv.SHUTDOWN)
    assert trio.current_time() == pytest.approx(1000)


async def test_shutdown_of_simple_one_for_one_children_is_concurrent(autojump_clock):
    # OTP's simple_one_for_one_shutdown: two stop in 1 s, one is killed at the 2 s timeout.
    world = World(stop_delay={"t": 1, "slow": 5})
    tree = spec(worker(world, "t", shutdown=2.0), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        await sup.start_child(("quick1",))
        await sup.start_child(("quick2",))
        await sup.start_child(("slow",))
    assert trio.current_time() == pytest.approx(2.0)  # not 1 + 1 + 2: together
    assert world.events("stop") == ["t", "t"]


async def test_a_stuck_message_and_a_shutdown_timeout(autojump_clock):
    # OTP's sup_stop_timeout: a child busy for 200 s is killed at its 1 s shutdown timeout.
    world = World()
    async with sv.open_supervisor(spec(worker(world, "busy", shutdown=1.0))) as sup:
        sup.whereis("busy").send_nowait(("sleep", 200))
        await settle()
        start = trio.current_time()
        await sup.terminate_child("busy")
        assert trio.current_time() - start == pytest.approx(1.0)
        assert world.events("stop") == []


# -- mailboxes across restarts --------------------------------------------------------------


@pytest.mark.parametrize("policy", [sv.KEEP, sv.DROP])
async def test_mailbox_keep_vs_drop_across_a_restart(autojump_clock, policy):
    # The first restart attempt fails after 1 s, the second succeeds: mail sent meanwhile is
    # kept (KEEP) or dropped when the next attempt begins (DROP).
    world = World(start_delay={"c": 1.0})
    async with sv.open_supervisor(spec(worker(world, "c", mailbox=policy), intensity=5)) as sup:
        ref = sup.whereis("c")
        world.fail_start["c"] = 1
        results: dict[str, Any] = {}

        async def call(key, message):
            try:
                results[key] = await ref.call(message, timeout=None)
            except sv.ActorDeadError as e:
                results[key] = e

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "crashing", ("crash_after", 1))
            await settle()
            nursery.start_soon(call, "queued before the crash", ("echo", "a"))
            await trio.sleep(1.5)  # crashed at 1 s; a failing attempt runs until 2 s
            assert ref.is_alive()
            nursery.start_soon(call, "queued during the restart", ("echo", "b"))
        crashing = results["crashing"]
        assert isinstance(crashing, sv.ActorDeadError)
        assert isinstance(crashing.reason, sv.Error)  # the crashing message is not redelivered
        if policy is sv.KEEP:
            assert results["queued before the crash"] == ("a", 2)
            assert results["queued during the restart"] == ("b", 2)
        else:
            assert isinstance(results["queued before the crash"], sv.ActorDeadError)
            assert isinstance(results["queued during the restart"], sv.ActorDeadError)
        assert await ref.call(("echo", "c")) == ("c", 2)


async def test_casts_queued_during_a_restart_reach_the_new_incarnation(autojump_clock):
    received = []

    class Keeper(Worker):
        async def receive(self, message):
            if isinstance(message, int):
                received.append((message, self.incarnation))
                return None
            return await super().receive(message)

    world = World(start_delay={"k": 1.0})
    child = sv.ChildSpec(id="k", start=Keeper, args=(world, "k"))
    async with sv.open_supervisor(spec(child)) as sup:
        ref = sup.whereis("k")
        ref.send_nowait("crash")
        for i in range(5):
            await ref.send(i)
        await trio.sleep(2)
    assert received == [(i, 2) for i in range(5)]


# -- no orphans ----------------------------------------------------------------------------


async def test_no_orphans_after_the_supervisor_is_gone(autojump_clock):
    world = World()

    async def side():
        await trio.sleep_forever()

    class WithSide(Worker):
        async def on_start(self):
            await super().on_start()
            self.start_task(side)

    inner = spec(sv.ChildSpec(id="x", start=WithSide, args=(world, "x")))
    tree = spec(worker(world, "a"), sup_child("s", inner), worker(world, "t"))
    async with sv.open_supervisor(tree, name="orphans") as sup:
        names = task_names()
        assert "supervisor orphans" in names and "x" in names
        assert any(n.endswith(".side") for n in names)
        refs = [sup.whereis("a"), sup.child_supervisor("s").whereis("x")]
    left = task_names()
    assert "supervisor orphans" not in left and not {"a", "s", "x", "t"} & set(left)
    assert not any(n.endswith(".side") for n in left)
    for ref in refs:
        assert not ref.is_alive()
        assert await ref.wait() == sv.SHUTDOWN


async def test_no_orphans_when_a_child_supervisor_is_brutally_killed(autojump_clock):
    # Killing a supervisor cancels its whole subtree (no on_stop anywhere) and closes every
    # cell in it: calls to the grandchildren fail at once, nothing is left running.
    world = World()
    inner = spec(worker(world, "x"), worker(world, "y"))
    tree = spec(sup_child("s", inner, shutdown=sv.BRUTAL_KILL), worker(world, "b"))
    async with sv.open_supervisor(tree) as sup:
        x = sup.child_supervisor("s").whereis("x")
        await sup.terminate_child("s")
        assert world.events("stop") == []
        assert not x.is_alive()
        with pytest.raises(sv.ActorDeadError) as info:
            await x.call("who")
        assert info.value.reason == sv.KILLED
        assert not {"x", "y", "s"} & set(task_names())


async def test_no_orphans_after_giving_up(autojump_clock):
    world = World()
    tree = spec(worker(world, "a"), worker(world, "b"), intensity=0)
    async with sv.open_supervisor(tree, name="gives-up") as sup:
        await make_exit(sup.whereis("a"), "error")
        assert not sup.is_alive()
        assert not {"a", "b", "supervisor gives-up"} & set(task_names())


async def test_cancelling_the_block_leaves_nothing(autojump_clock):
    world = World(stop_delay={"a": 1})
    with trio.move_on_after(5):
        async with sv.open_supervisor(spec(worker(world, "a"))):
            await trio.sleep_forever()
    # The shutdown ran shielded, in order, on_stop included.
    assert world.events("stop") == ["a"]
    assert "a" not in task_names()


# -- snapshot ----------------------------------------------------------------------------------


async def test_snapshot(autojump_clock):
    world = World()
    inner = spec(worker(world, "x"), strategy=sv.ONE_FOR_ALL)
    tree = spec(worker(world, "a"), sup_child("s", inner), worker(world, "t"), intensity=5)
    async with sv.open_supervisor(tree, name="root") as sup:
        await make_exit(sup.whereis("a"), "error")
        await sup.terminate_child("t")
        sup.whereis("a").send_nowait(("sleep", 1))
        await settle()
        sup.whereis("a").send_nowait("queued")
        snap = sup.snapshot()
        assert (snap.id, snap.kind, snap.state) == ("root", "supervisor:one_for_one", "running")
        a, s, t = snap.children
        assert (a.id, a.kind, a.state, a.restarts, a.mailbox_depth) == (
            "a", "worker", "running", 1, 1
        )
        assert (s.id, s.kind, s.state, s.restarts) == ("s", "supervisor:one_for_all", "running", 0)
        assert [(c.id, c.state) for c in s.children] == [("x", "running")]
        assert (t.id, t.state) == ("t", "terminated")
        as_dict = snap.to_dict()
        assert as_dict["children"][1]["children"][0]["id"] == "x"
        assert as_dict["children"][0]["restarts"] == 1


async def test_snapshot_child_restarts_count_children_since_gone(autojump_clock):
    # The supervisor's own count only grows (a metric's counter): a restarted dynamic child
    # that stops for good takes its `restarts` with it, not the supervisor's `child_restarts`.
    world = World()
    inner = spec(
        worker(world, "t", restart=sv.TRANSIENT), strategy=sv.SIMPLE_ONE_FOR_ONE, intensity=5
    )
    async with sv.open_supervisor(spec(sup_child("dyn", inner)), name="root") as root:
        dyn = root.child_supervisor("dyn")
        assert dyn is not None
        a = await dyn.start_child(("a",))
        await make_exit(a, "error")
        await make_exit(a, "error")
        snap = root.snapshot()
        assert (snap.child_restarts, snap.children[0].child_restarts) == (0, 2)
        assert snap.children[0].children[0].restarts == 2
        await make_exit(a, "normal")  # transient: gone for good
        snap = root.snapshot()
        assert snap.children[0].children == ()
        assert snap.children[0].child_restarts == 2
        assert snap.to_dict()["children"][0]["child_restarts"] == 2


class Labelled(Worker):
    def __init__(self, world: World, name: str, *extra: Any) -> None:
        super().__init__(world, name, *extra)
        self.label = f"serving {extra[0]}"


async def test_snapshot_shows_a_worker_label(autojump_clock):
    world = World()
    template = sv.ChildSpec(id="t", start=Labelled, args=(world, "t"))
    dynamic = spec(template, strategy=sv.SIMPLE_ONE_FOR_ONE)
    tree = spec(worker(world, "a"), sup_child("dyn", dynamic))
    async with sv.open_supervisor(tree, name="root") as root:
        dyn = root.child_supervisor("dyn")
        assert dyn is not None
        await dyn.start_child(("bob",))
        snap = root.snapshot()
        assert snap.children[0].label is None
        (child,) = snap.children[1].children
        assert (child.id, child.label) == ("t", "serving bob")
        assert snap.to_dict()["children"][1]["children"][0]["label"] == "serving bob"


async def test_supervisor_stats_walk_supervisors_only(autojump_clock):
    world = World()
    inner = spec(worker(world, "t"), strategy=sv.SIMPLE_ONE_FOR_ONE, intensity=5)
    tree = spec(worker(world, "a"), sup_child("dyn", inner), intensity=5)
    async with sv.open_supervisor(tree, name="root") as root:
        dyn = root.child_supervisor("dyn")
        assert dyn is not None
        x = await dyn.start_child(("x",))
        await dyn.start_child(("y",))
        await make_exit(x, "error")
        x.send_nowait(("sleep", 1))
        await settle()
        x.send_nowait("queued")
        assert root.supervisor_stats() == [
            sv.SupervisorStats(("root",), 0, 2, (0, 0)),
            sv.SupervisorStats(("root", "dyn"), 1, 2, (1, 0)),
        ]
        assert dyn.supervisor_stats()[0].path == ("dyn",)


async def test_open_supervisor_lets_errors_through(autojump_clock):
    world = World()
    with pytest.raises(KeyError):
        async with sv.open_supervisor(spec(worker(world, "a"))):
            raise KeyError("from the block")
    assert world.events("stop") == ["a"]


async def test_a_supervisor_child_must_start_a_supervisor_spec(autojump_clock):
    world = World()
    async with sv.open_supervisor(spec()) as sup:
        with pytest.raises(sv.StartFailed) as info:
            await sup.start_child(
                sv.ChildSpec(id="s", start=Worker, args=(world, "s"), kind=sv.SUPERVISOR)
            )
        assert isinstance(info.value.reason.exception, TypeError)


# -- the instant start_child of simple_one_for_one ------------------------------------------

WHO = contextvars.ContextVar("WHO", default="nobody")


class Plain(sv.Actor):
    """No on_start: a simple_one_for_one template of these starts instantly when idle."""

    def __init__(self, stop_delay: float = 0.0) -> None:
        self.stop_delay = stop_delay

    async def receive(self, message: Any) -> Any:
        return WHO.get()

    async def on_stop(self, reason: sv.ExitReason) -> None:
        await trio.sleep(self.stop_delay)


class PlainStarting(Plain):
    async def on_start(self) -> None:
        pass


@pytest.mark.parametrize("template", [Plain, PlainStarting])
async def test_instant_start_child_runs_children_in_the_supervisors_context(
    autojump_clock, template
):
    tree = spec(sv.ChildSpec(id="p", start=template), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        token = WHO.set("the caller")
        try:
            ref = await sup.start_child()
        finally:
            WHO.reset(token)
        # Instant (Plain) or through the supervisor (PlainStarting): the same context.
        assert await ref.call("who") == "nobody"


async def test_instant_start_child_is_ordered_after_what_the_supervisor_is_doing(
    autojump_clock,
):
    tree = spec(sv.ChildSpec(id="p", start=Plain), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        slow = await sup.start_child((1.0,))  # its on_stop takes 1 s
        assert trio.current_time() == 0  # idle supervisor: instant
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.terminate_child, slow)
            await settle()
            # The supervisor is busy stopping `slow`: this request waits its turn (OTP order).
            ref = await sup.start_child()
            assert trio.current_time() == pytest.approx(1.0)
        assert [c.ref for c in sup.which_children()] == [ref]
        assert counts(sup) == [1, 1, 0, 1]


async def test_instant_start_child_start_failure(autojump_clock):
    class Refuses(Plain):
        def __init__(self) -> None:
            raise Crash("no")

    tree = spec(sv.ChildSpec(id="r", start=Refuses), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        with pytest.raises(sv.StartFailed) as info:
            await sup.start_child()
        assert isinstance(info.value.reason.exception, Crash)
        assert sup.which_children() == []
        with pytest.raises(sv.InvalidChildSpec):
            await sup.start_child("not a tuple")
        sup.stop()
        await sup.wait()
        with pytest.raises(sv.SupervisorGone):
            await sup.start_child()


async def test_a_request_queued_when_the_supervisor_exits_is_supervisor_gone(autojump_clock):
    world = World(stop_delay={"slow": 1})
    async with sv.open_supervisor(spec(worker(world, "slow"))) as sup:
        sup.stop()  # stopping takes 1 s (slow's on_stop)
        with pytest.raises(sv.SupervisorGone):
            await sup.restart_child("slow")
        assert not sup.is_alive()
        assert sup.child_supervisor("slow") is None


async def test_child_supervisor_by_ref_and_none_for_a_worker(autojump_clock):
    world = World()
    inner = spec(worker(world, "x"))
    tree = spec(sup_child("s", inner), strategy=sv.SIMPLE_ONE_FOR_ONE)
    async with sv.open_supervisor(tree) as sup:
        ref = await sup.start_child()
        child = sup.child_supervisor(ref)
        assert child is not None and child.whereis("x") is not None
        assert sup.child_supervisor("s") is not None  # the template id finds the first
        assert child.child_supervisor("x") is None  # a worker, not a supervisor
        assert sup.snapshot().children[0].kind == "supervisor:one_for_one"


@pytest.mark.parametrize("strategy", [sv.ONE_FOR_ONE, sv.ONE_FOR_ALL, sv.REST_FOR_ONE])
@pytest.mark.parametrize("how", ["killed", "normal", "error", "terminate_child"])
async def test_temporary_child_specs_are_not_saved(autojump_clock, strategy, how):
    # OTP's do_not_save_child_specs_for_temporary_children: a gone temporary child can be
    # started again; a permanent one was restarted (already started); a transient one that
    # ended normally, or any terminated one, is still there (already present).
    world = World()
    async with sv.open_supervisor(spec(strategy=strategy, intensity=10)) as sup:
        for restart in (sv.PERMANENT, sv.TRANSIENT, sv.TEMPORARY):
            child = worker(world, restart.value, restart=restart)
            ref = await sup.start_child(child)
            if how == "terminate_child":
                await sup.terminate_child(child.id)
            else:
                await make_exit(ref, how)
            if restart is sv.TEMPORARY:
                assert await sup.start_child(child) is not ref
            elif how == "terminate_child" or (restart is sv.TRANSIENT and how == "normal"):
                with pytest.raises(sv.AlreadyPresent):
                    await sup.start_child(child)
                assert await sup.restart_child(child.id) is ref
            else:
                with pytest.raises(sv.AlreadyStarted):
                    await sup.start_child(child)


# -- garbage -----------------------------------------------------------------------------------


class Payload:
    """Stands for what an actor holds (a connection's socket, WebSocket and parser)."""


class Holder(sv.Actor):
    def __init__(self, payload: Payload) -> None:
        self.payload = payload

    async def receive(self, message: Any) -> Any:
        if message == "stop":
            self.stop()


@pytest.mark.parametrize("asleep", [False, True])
async def test_what_an_ended_child_held_is_freed_without_the_cyclic_gc(asleep):
    # A login and logout ends a connection actor: what it held must go when its last
    # reference does, not wait for a collection of the cyclic GC (which, with ~55 objects
    # per connection, took a tenth of the node's CPU in a storm of logins).
    import gc
    import weakref

    tree = spec(
        sv.ChildSpec("holder", Holder, restart=sv.TEMPORARY), strategy=sv.SIMPLE_ONE_FOR_ONE
    )
    gc.disable()
    try:
        async with sv.open_supervisor(tree) as sup:
            payload = Payload()
            held = weakref.ref(payload)
            ref = await sup.start_child((payload,))
            del payload
            while asleep and not ref.hibernate():
                await trio.sleep(0)  # until its task is parked on the empty mailbox
            ref.send_nowait("stop")
            await ref.wait()
            while sup.which_children():
                await trio.sleep(0)
            assert held() is None
    finally:
        gc.enable()


class _Steps(trio.abc.Instrument):
    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task, self.count = task, 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count += task is self.task


async def test_an_exit_that_restarts_nothing_is_handled_at_once_by_an_idle_supervisor():
    # A logout ends a temporary connection actor: its exit is handled where the child ends,
    # the supervisor being idle (it would take that exit next), so the supervisor takes no
    # step for it and its next start_child finds it idle (no call). A crash of a permanent
    # child still goes through the supervisor's mailbox (its restart awaits the start).
    tree = spec(
        sv.ChildSpec("holder", Holder, restart=sv.TEMPORARY), strategy=sv.SIMPLE_ONE_FOR_ONE
    )
    async with sv.open_supervisor(tree) as sup:
        ref = await sup.start_child((Payload(),))
        supervisor = sup._sup._proc
        while not supervisor.cell.mailbox.receiver_idle():
            await trio.sleep(0)
        steps = _Steps(supervisor.cell.mailbox._receiver)
        trio.lowlevel.add_instrument(steps)
        try:
            ref.send_nowait("stop")
            await ref.wait()
            assert sup.which_children() == []
            await trio.sleep(0.01)
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.count == 0
