"""Actors, refs, calls, links and monitors (``supervisors/_actor.py``), unsupervised: spawned
into a test nursery. Everything time-dependent runs on the autojump clock."""

from __future__ import annotations

import math
from typing import Any

import outcome
import pytest
import trio
import trio.testing

import supervisors as sv
from supervisors._actor import _Call


class Boom(Exception):
    pass


class Probe(sv.Actor):
    """Answers ("echo", x) with x; records lifecycle events in ``log``; obeys a few commands."""

    def __init__(self, log: list | None = None) -> None:
        super().__init__()
        self.log = log if log is not None else []
        self.received: list[Any] = []
        self.replies: list[sv.Reply] = []

    async def on_start(self) -> None:
        self.log.append("start")

    async def receive(self, message: Any) -> Any:
        self.received.append(message)
        match message:
            case ("echo", x):
                return x
            case ("sleep", seconds):
                await trio.sleep(seconds)
                return "slept"
            case "boom":
                raise Boom("boom")
            case ("exit", reason):
                raise sv.Exit(reason)
            case "stop":
                self.stop()
                return "stopping"
            case "defer":
                self.replies.append(self.defer_reply())
                return "ignored"
            case ("side", fn):
                self.start_task(fn)
                return "started"
            case "forever":
                await trio.sleep_forever()
        return None

    async def on_stop(self, reason: sv.ExitReason) -> None:
        self.log.append(("stop", reason))


class SlowStop(Probe):
    async def on_stop(self, reason: sv.ExitReason) -> None:
        self.log.append(("stopping", reason))
        await trio.sleep(10)
        self.log.append(("stop", reason))


# -- send and call -------------------------------------------------------------------------


async def test_call_returns_the_reply_and_send_is_handled_in_order():
    async with trio.open_nursery() as nursery:
        actor = Probe()
        ref = sv.spawn(nursery, actor, name="probe")
        assert ref.name == "probe" and ref.is_alive()
        ref.send_nowait(1)
        await ref.send(2)
        assert await ref.call(("echo", 3)) == 3
        assert actor.received == [1, 2, ("echo", 3)]
        ref.stop()
    assert await ref.wait() == sv.SHUTDOWN
    assert not ref.is_alive()


async def test_mailbox_bound_send_nowait_raises_send_waits(autojump_clock):
    class Small(Probe):
        mailbox_size = 2

    async with trio.open_nursery() as nursery:
        actor = Small()
        ref = sv.spawn(nursery, actor)
        await ref.call(("echo", None))
        ref.send_nowait(("sleep", 1))  # taken at once by the parked loop
        await trio.testing.wait_all_tasks_blocked()
        ref.send_nowait("a")
        ref.send_nowait("b")
        assert ref.mailbox_depth() == 2
        with pytest.raises(sv.MailboxFull):
            ref.send_nowait("c")
        start = trio.current_time()
        await ref.send("c")  # waits until the sleep is over and "a" is taken
        assert trio.current_time() - start == pytest.approx(1)
        await ref.call(("echo", None))
        ref.stop()
    assert actor.received[-4:] == ["a", "b", "c", ("echo", None)]


async def test_spawn_mailbox_size_overrides_the_class_bound():
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(), mailbox_size=1)
        ref.send_nowait(("echo", 0))
        # The loop has not run yet: the first message is queued, the second is over the bound.
        with pytest.raises(sv.MailboxFull):
            ref.send_nowait(("echo", 1))
        ref.kill()


async def test_call_timeout_is_a_timeout_error(autojump_clock):
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        start = trio.current_time()
        with pytest.raises(sv.CallTimeout) as info:
            await ref.call("forever", timeout=2.5)
        assert isinstance(info.value, TimeoutError)
        assert trio.current_time() - start == pytest.approx(2.5)
        ref.kill()


async def test_call_timeout_covers_waiting_for_room(autojump_clock):
    class One(Probe):
        mailbox_size = 1

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, One())
        ref.send_nowait("forever")
        await trio.testing.wait_all_tasks_blocked()
        ref.send_nowait("queued")
        with pytest.raises(sv.CallTimeout):
            await ref.call(("echo", 1), timeout=1)
        ref.kill()


async def test_a_late_reply_after_a_timeout_is_dropped(autojump_clock):
    async with trio.open_nursery() as nursery:
        actor = Probe()
        ref = sv.spawn(nursery, actor)
        with pytest.raises(sv.CallTimeout):
            await ref.call(("sleep", 5), timeout=1)
        # The actor still handles the request later; its answer goes nowhere, and the actor
        # is fine.
        assert await ref.call(("echo", "after"), timeout=10) == "after"
        ref.stop()


async def test_send_and_call_to_a_dead_actor_raise_actor_dead_error_with_the_reason():
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        ref.send_nowait("boom")
    reason = await ref.wait()
    assert isinstance(reason, sv.Error) and isinstance(reason.exception, Boom)
    with pytest.raises(sv.ActorDeadError) as info:
        ref.send_nowait(1)
    assert info.value.reason is reason
    with pytest.raises(sv.ActorDeadError):
        await ref.send(1)
    with pytest.raises(sv.ActorDeadError) as info:
        await ref.call(("echo", 1))
    assert info.value.reason is reason


# -- calls always resolve ------------------------------------------------------------------


async def test_call_resolves_when_the_actor_crashes_while_handling_it():
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        with pytest.raises(sv.ActorDeadError) as info:
            await ref.call("boom", timeout=None)
    assert isinstance(info.value.reason, sv.Error)
    assert isinstance(info.value.reason.exception, Boom)


async def test_call_resolves_when_pending_in_the_mailbox_and_the_actor_dies_for_good():
    results = []

    async def caller(ref):
        try:
            await ref.call(("echo", "queued"), timeout=None)
        except sv.ActorDeadError as e:
            results.append(e.reason)

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        ref.send_nowait("forever")
        nursery.start_soon(caller, ref)
        await trio.testing.wait_all_tasks_blocked()
        assert ref.mailbox_depth() == 1
        ref.kill()
    assert results == [sv.KILLED]


async def test_call_with_no_timeout_resolves_when_a_stop_leaves_it_queued(autojump_clock):
    results = []

    async def caller(ref):
        try:
            await ref.call(("echo", "late"), timeout=None)
        except sv.ActorDeadError as e:
            results.append(e.reason)

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        ref.send_nowait(("sleep", 1))
        nursery.start_soon(caller, ref)
        await trio.testing.wait_all_tasks_blocked()
        ref.stop()  # the loop ends after the sleep; the queued call is failed at close
    assert results == [sv.SHUTDOWN]


async def test_deferred_reply_is_answered_later():
    async with trio.open_nursery() as nursery:
        actor = Probe()
        ref = sv.spawn(nursery, actor)

        async def answer():
            await trio.testing.wait_all_tasks_blocked()
            actor.replies[0].send("later")

        nursery.start_soon(answer)
        assert await ref.call("defer") == "later"
        # Answering twice does nothing.
        actor.replies[0].send("again")
        ref.stop()


async def test_deferred_reply_can_fail_with_any_exception():
    async with trio.open_nursery() as nursery:
        actor = Probe()
        ref = sv.spawn(nursery, actor)

        async def answer():
            await trio.testing.wait_all_tasks_blocked()
            actor.replies[0].fail(KeyError("nope"))

        nursery.start_soon(answer)
        with pytest.raises(KeyError):
            await ref.call("defer")
        ref.stop()


async def test_deferred_reply_whose_actor_dies_fails_with_actor_dead_error():
    async with trio.open_nursery() as nursery:
        actor = Probe()
        ref = sv.spawn(nursery, actor)

        async def crash():
            await trio.testing.wait_all_tasks_blocked()
            ref.send_nowait("boom")

        nursery.start_soon(crash)
        with pytest.raises(sv.ActorDeadError) as info:
            await ref.call("defer", timeout=None)
    assert isinstance(info.value.reason, sv.Error)
    actor.replies[0].send("too late")  # harmless


async def test_defer_reply_outside_a_call_is_an_error():
    class Caster(sv.Actor):
        async def receive(self, message):
            self.defer_reply()

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Caster())
        ref.send_nowait("cast")
    reason = await ref.wait()
    assert isinstance(reason, sv.Error) and isinstance(reason.exception, RuntimeError)


# -- exit reasons and on_stop -----------------------------------------------------------------


@pytest.mark.parametrize(
    "reason", [sv.NORMAL, sv.SHUTDOWN, sv.Shutdown("detail"), sv.Error(Boom("x"))]
)
async def test_exit_raised_in_receive_is_the_exit_reason_and_on_stop_runs(reason):
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        ref.send_nowait(("exit", reason))
    assert await ref.wait() == reason
    assert log == ["start", ("stop", reason)]


async def test_exception_in_receive_is_error_and_on_stop_sees_it():
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        ref.send_nowait("boom")
    reason = await ref.wait()
    assert isinstance(reason, sv.Error) and isinstance(reason.exception, Boom)
    assert log == ["start", ("stop", reason)]


async def test_self_stop_is_normal_and_ref_stop_is_shutdown():
    log: list = []
    async with trio.open_nursery() as nursery:
        a = sv.spawn(nursery, Probe(log))
        assert await a.call("stop") == "stopping"
        b = sv.spawn(nursery, Probe())
        await b.call(("echo", 1))
        b.stop(sv.Shutdown("bye"))
    assert await a.wait() == sv.NORMAL
    assert log == ["start", ("stop", sv.NORMAL)]
    assert await b.wait() == sv.Shutdown("bye")


async def test_on_stop_raising_makes_the_reason_error():
    class BadStop(Probe):
        async def on_stop(self, reason):
            raise Boom("in on_stop")

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, BadStop())
        ref.stop()
    reason = await ref.wait()
    assert isinstance(reason, sv.Error) and str(reason.exception) == "in on_stop"


async def test_on_start_failure_fails_spawn_started_without_on_stop():
    class BadStart(Probe):
        async def on_start(self):
            self.log.append("start")
            raise Boom("no")

    log: list = []
    async with trio.open_nursery() as nursery:
        with pytest.raises(sv.ActorDeadError) as info:
            await sv.spawn_started(nursery, BadStart(log))
    assert isinstance(info.value.reason, sv.Error)
    assert log == ["start"]


async def test_spawn_started_succeeds_even_if_the_actor_exits_right_after_starting():
    # Guards _Process.ran: the start succeeded though the actor is gone when we look.
    class Brief(sv.Actor):
        async def on_start(self):
            self.stop()

    async with trio.open_nursery() as nursery:
        ref = await sv.spawn_started(nursery, Brief())
    assert await ref.wait() == sv.NORMAL


async def test_spawn_needs_an_actor_instance():
    async with trio.open_nursery() as nursery:
        with pytest.raises(TypeError):
            sv.spawn(nursery, Probe)  # the class, not an instance


# -- kill vs stop --------------------------------------------------------------------------


async def test_kill_vs_stop_stop_lets_the_current_message_finish(autojump_clock):
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        result = []

        async def call():
            result.append(await ref.call(("sleep", 3)))

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        ref.stop()
    assert result == ["slept"]
    assert log == ["start", ("stop", sv.SHUTDOWN)]


async def test_kill_vs_stop_kill_cancels_at_once_and_skips_on_stop(autojump_clock):
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        ref.send_nowait(("sleep", 3))
        await trio.testing.wait_all_tasks_blocked()
        ref.kill()
    assert trio.current_time() == 0
    assert await ref.wait() == sv.KILLED
    assert log == ["start"]


async def test_kill_during_on_stop_cuts_it_short_and_the_reason_is_killed(autojump_clock):
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, SlowStop(log))
        await ref.call(("echo", 1))
        ref.stop()
        await trio.sleep(1)
        ref.kill()
    assert await ref.wait() == sv.KILLED
    assert log == ["start", ("stopping", sv.SHUTDOWN)]


async def test_kill_before_the_task_runs():
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        ref.kill()
    assert await ref.wait() == sv.KILLED
    assert log == []


async def test_cancelling_the_nursery_kills_the_actor():
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        await ref.call(("echo", 1))
        nursery.cancel_scope.cancel()
    assert await ref.wait() == sv.KILLED
    assert log == ["start"]


# -- side tasks ----------------------------------------------------------------------------


async def test_side_task_crash_crashes_the_actor_and_on_stop_runs(autojump_clock):
    log: list = []

    async def side():
        await trio.sleep(1)
        raise Boom("side")

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        await ref.call(("side", side))
        with pytest.raises(sv.ActorDeadError) as info:
            await ref.call("forever", timeout=None)  # interrupted by the crash
    reason = await ref.wait()
    assert isinstance(reason, sv.Error) and str(reason.exception) == "side"
    assert info.value.reason is reason
    assert log == ["start", ("stop", reason)]
    assert trio.current_time() == 1


async def test_side_task_exit_killed_is_a_kill():
    log: list = []

    async def side():
        raise sv.Exit(sv.KILLED)

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe(log))
        await ref.call(("side", side))
    assert await ref.wait() == sv.KILLED
    assert log == ["start"]


async def test_side_tasks_are_cancelled_when_the_actor_exits():
    cancelled = []

    async def side():
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async with trio.open_nursery() as nursery:
        actor = Probe()
        ref = sv.spawn(nursery, actor)
        await ref.call(("side", side))
        ref.stop()
    assert cancelled == [True]
    with pytest.raises(sv.ActorDeadError):
        actor.start_task(side)


async def test_side_tasks_come_and_go_in_any_order_and_all_are_cancelled_at_exit():
    """One side task is kept as its bare scope, more in a list (``side_scopes``): whatever
    the order they end in, the count holds and an exit cancels every one left."""
    releases = [trio.Event() for _ in range(3)]
    cancelled: list[int] = []

    def side(i: int):
        async def run():
            try:
                await releases[i].wait()
            except trio.Cancelled:
                cancelled.append(i)
                raise

        return run

    async with trio.open_nursery() as nursery:
        actor = Probe()
        ref = sv.spawn(nursery, actor)
        proc = actor._proc
        for i in range(3):
            await ref.call(("side", side(i)))
            await trio.testing.wait_all_tasks_blocked()
            assert proc.side_task_count() == i + 1
        for i, left in ((1, 2), (0, 1)):
            releases[i].set()
            await trio.testing.wait_all_tasks_blocked()
            assert proc.side_task_count() == left
        await ref.call(("side", side(0)))  # (already released: ends at once)
        await trio.testing.wait_all_tasks_blocked()
        assert proc.side_task_count() == 1
        ref.stop()
    assert cancelled == [2]
    assert proc.side_task_count() == 0


async def test_side_task_started_in_on_start_crashing_fails_the_start():
    class Starter(sv.Actor):
        async def on_start(self):
            async def side():
                raise Boom("early")

            self.start_task(side)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        with pytest.raises(sv.ActorDeadError) as info:
            await sv.spawn_started(nursery, Starter())
    assert isinstance(info.value.reason, sv.Error)


# -- links ---------------------------------------------------------------------------------


class Linker(Probe):
    async def receive(self, message):
        match message:
            case ("link", ref):
                self.link(ref)
                return None
            case ("unlink", ref):
                self.unlink(ref)
                return None
            case ("monitor", ref):
                return self.monitor(ref)
            case ("demonitor", mon):
                self.demonitor(mon)
                return None
        return await super().receive(message)


class Trapper(Linker):
    trap_exits = True


@pytest.mark.parametrize(
    ("peer_reason", "expected", "on_stop_runs"),
    [
        (sv.Error(Boom("peer")), "same", True),
        (sv.SHUTDOWN, "same", True),
        (sv.Shutdown("detail"), "same", True),
        (sv.KILLED, "same", False),
    ],
)
async def test_link_without_trap_exits_propagates_any_reason_but_normal(
    peer_reason, expected, on_stop_runs
):
    log: list = []
    async with trio.open_nursery() as nursery:
        a = sv.spawn(nursery, Linker(log))
        b = sv.spawn(nursery, Probe())
        await a.call(("link", b))
        b.kill(peer_reason) if peer_reason == sv.KILLED else b.send_nowait(("exit", peer_reason))
    assert await b.wait() == peer_reason
    assert await a.wait() == peer_reason
    assert (("stop", peer_reason) in log) is on_stop_runs


async def test_link_normal_exit_is_ignored_without_trap_exits():
    async with trio.open_nursery() as nursery:
        a = sv.spawn(nursery, Linker())
        b = sv.spawn(nursery, Probe())
        await a.call(("link", b))
        await b.call("stop")
        assert await b.wait() == sv.NORMAL
        assert await a.call(("echo", "alive")) == "alive"
        a.stop()


async def test_link_is_two_way():
    async with trio.open_nursery() as nursery:
        a = sv.spawn(nursery, Linker())
        b = sv.spawn(nursery, Probe())
        await a.call(("link", b))
        a.send_nowait("boom")
    assert isinstance(await b.wait(), sv.Error)


async def test_unlink_stops_propagation():
    async with trio.open_nursery() as nursery:
        a = sv.spawn(nursery, Linker())
        b = sv.spawn(nursery, Probe())
        await a.call(("link", b))
        await a.call(("unlink", b))
        b.send_nowait("boom")
        await b.wait()
        assert await a.call(("echo", 1)) == 1
        a.stop()


async def test_link_with_trap_exits_delivers_exit_signals_even_normal():
    async with trio.open_nursery() as nursery:
        trapper = Trapper()
        t = sv.spawn(nursery, trapper)
        b = sv.spawn(nursery, Probe())
        c = sv.spawn(nursery, Probe())
        await t.call(("link", b))
        await t.call(("link", c))
        await b.call("stop")
        c.send_nowait("boom")
        await c.wait()
        assert await t.call(("echo", "still alive")) == "still alive"
        signals = [m for m in trapper.received if isinstance(m, sv.ExitSignal)]
        assert (signals[0].ref, signals[0].reason) == (b, sv.NORMAL)
        assert signals[1].ref is c and isinstance(signals[1].reason, sv.Error)
        t.stop()


async def test_link_to_a_dead_actor_raises():
    async with trio.open_nursery() as nursery:
        b = sv.spawn(nursery, Probe())
        b.stop()
        await b.wait()
        a = sv.spawn(nursery, Linker())
        with pytest.raises(sv.ActorDeadError):
            await a.call(("link", b))  # the call fails: link raised inside receive
    assert isinstance(await a.wait(), sv.Error)


async def test_exit_signals_pass_a_full_mailbox(autojump_clock):
    class TinyTrapper(Trapper):
        mailbox_size = 1

    async with trio.open_nursery() as nursery:
        trapper = TinyTrapper()
        t = sv.spawn(nursery, trapper)
        b = sv.spawn(nursery, Probe())
        await t.call(("link", b))
        t.send_nowait(("sleep", 1))
        await trio.testing.wait_all_tasks_blocked()
        t.send_nowait("fills the mailbox")
        with pytest.raises(sv.MailboxFull):
            t.send_nowait("over")
        b.kill()
        await b.wait()
        assert t.mailbox_depth() == 2  # the exit signal got in past the bound
        await trio.sleep(2)
        assert isinstance(trapper.received[-1], sv.ExitSignal)
        t.stop()


# -- monitors ------------------------------------------------------------------------------


async def test_monitor_delivers_one_down_with_the_reason():
    async with trio.open_nursery() as nursery:
        watcher = Linker()
        w = sv.spawn(nursery, watcher)
        b = sv.spawn(nursery, Probe())
        mon = await w.call(("monitor", b))
        assert isinstance(mon, sv.Monitor) and mon.ref is b
        b.send_nowait("boom")
        await b.wait()
        await w.call(("echo", None))  # the Down is queued before this call
        downs = [m for m in watcher.received if isinstance(m, sv.Down)]
        assert len(downs) == 1
        assert downs[0].ref is b and downs[0].monitor is mon
        assert isinstance(downs[0].reason, sv.Error)
        w.stop()


async def test_monitor_is_one_way_and_demonitor_cancels_it():
    async with trio.open_nursery() as nursery:
        watcher = Linker()
        w = sv.spawn(nursery, watcher)
        b = sv.spawn(nursery, Probe())
        mon = await w.call(("monitor", b))
        await w.call(("demonitor", mon))
        b.kill()
        await b.wait()
        await w.call(("echo", None))
        assert not any(isinstance(m, sv.Down) for m in watcher.received)
        # One-way: the watcher's exit does nothing to the watched.
        c = sv.spawn(nursery, Probe())
        await w.call(("monitor", c))
        w.send_nowait("boom")
        await w.wait()
        assert await c.call(("echo", "fine")) == "fine"
        c.stop()


async def test_each_monitor_not_demonitored_gets_one_down_few_or_many():
    # A few watchers are kept in a tuple, many in a set (memory per idle connection).
    for n in (3, 12):
        async with trio.open_nursery() as nursery:
            watcher = Linker()
            w = sv.spawn(nursery, watcher)
            b = sv.spawn(nursery, Probe())
            mons = [await w.call(("monitor", b)) for _ in range(n)]
            await w.call(("demonitor", mons[1]))
            await w.call(("demonitor", mons[1]))  # twice: nothing more
            if n > 3:
                await w.call(("demonitor", mons[-1]))
            b.kill()
            await b.wait()
            await w.call(("echo", None))
            downs = [m.monitor for m in watcher.received if isinstance(m, sv.Down)]
            expected = [m for m in mons if m is not mons[1] and (n == 3 or m is not mons[-1])]
            assert sorted(map(id, downs)) == sorted(map(id, expected))
            w.stop()


async def test_monitor_of_a_dead_actor_delivers_down_at_once():
    async with trio.open_nursery() as nursery:
        b = sv.spawn(nursery, Probe())
        b.stop()
        await b.wait()
        watcher = Linker()
        w = sv.spawn(nursery, watcher)
        await w.call(("monitor", b))
        await w.call(("echo", None))
        downs = [m for m in watcher.received if isinstance(m, sv.Down)]
        assert [d.reason for d in downs] == [sv.SHUTDOWN]
        w.stop()


async def test_wait_returns_at_once_when_already_gone():
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        ref.stop()
    assert await ref.wait() == sv.SHUTDOWN
    assert await ref.wait() == sv.SHUTDOWN


async def test_call_timeout_none_means_no_deadline(autojump_clock):
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        assert await ref.call(("sleep", 1e6), timeout=None) == "slept"
        assert await ref.call(("echo", 1), timeout=math.inf) == 1
        ref.stop()


async def test_exit_raised_in_receive_for_a_call_fails_the_call_with_that_reason():
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Probe())
        with pytest.raises(sv.ActorDeadError) as info:
            await ref.call(("exit", sv.Shutdown("bye")))
    assert info.value.reason == sv.Shutdown("bye")
    assert await ref.wait() == sv.Shutdown("bye")


async def test_exit_raised_in_on_stop_is_the_final_reason():
    class ExitInStop(Probe):
        async def on_stop(self, reason):
            raise sv.Exit(sv.Shutdown("from on_stop"))

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, ExitInStop())
        ref.stop()
    assert await ref.wait() == sv.Shutdown("from on_stop")


async def test_default_receive_answers_none_and_linking_to_oneself_is_a_no_op():
    class Bare(sv.Actor):
        async def on_start(self):
            self.link(self.ref)

    async with trio.open_nursery() as nursery:
        ref = await sv.spawn_started(nursery, Bare())
        assert await ref.call("anything") is None
        ref.stop()
    assert await ref.wait() == sv.SHUTDOWN


async def test_many_callers_on_a_full_mailbox_all_get_their_answer():
    # Callers wait for room (mailbox of 1); a request may be answered before its caller
    # resumes from the wait for room (guards _Call.wait's answered-already path).
    class One(Probe):
        mailbox_size = 1

    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, One())
        answers: list[int] = []

        async def caller(i):
            answers.append(await ref.call(("echo", i), timeout=None))

        async with trio.open_nursery() as callers:
            for i in range(200):
                callers.start_soon(caller, i)
        assert sorted(answers) == list(range(200))
        ref.stop()


async def test_a_call_answered_before_its_caller_parks():
    call = _Call("m")
    call.resolve(outcome.Value("early"))
    assert await call.wait() == "early"


# -- actors without on_start wait for their first message outside any cancel scope ----------


class Lazy(sv.Actor):
    """No on_start: it parks for its first message without a cancel scope."""

    def __init__(self, log: list) -> None:
        self.log = log

    async def receive(self, message: Any) -> Any:
        self.log.append(("receive", message))
        if isinstance(message, tuple) and message[0] == "link":
            self.link(message[1])
        return message

    async def on_stop(self, reason: sv.ExitReason) -> None:
        self.log.append(("stop", reason))


async def test_idle_actor_is_killed_at_once_without_on_stop():
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Lazy(log))
        await trio.testing.wait_all_tasks_blocked()
        assert ref._cell.process.scope is None  # idle and scope-less
        ref.kill()
    assert await ref.wait() == sv.KILLED
    assert log == []


async def test_idle_actor_crashed_by_a_link_runs_on_stop():
    log: list = []
    async with trio.open_nursery() as nursery:
        lazy = sv.spawn(nursery, Lazy(log))
        peer = sv.spawn(nursery, Probe())
        await peer.call(("echo", None))
        # The peer links to the idle actor (which never got a message), then crashes.
        peer_actor = peer._cell.process.actor
        peer_actor.link(lazy)
        peer.send_nowait("boom")
    reason = await lazy.wait()
    assert isinstance(reason, sv.Error) and isinstance(reason.exception, Boom)
    assert log == [("stop", reason)]


async def test_idle_actor_stops_and_is_cancelled_like_any_other():
    log: list = []
    async with trio.open_nursery() as nursery:
        stopped = sv.spawn(nursery, Lazy(log))
        await trio.testing.wait_all_tasks_blocked()
        stopped.stop()
    assert await stopped.wait() == sv.SHUTDOWN
    assert log == [("stop", sv.SHUTDOWN)]
    log.clear()
    async with trio.open_nursery() as nursery:
        cancelled = sv.spawn(nursery, Lazy(log))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert await cancelled.wait() == sv.KILLED
    assert log == []


@pytest.mark.parametrize("how", ["kill", "crash"])
async def test_idle_actor_handed_a_call_then_ended_fails_the_call(how):
    # The call is handed to the parked actor, which is killed (or crashed) before it runs:
    # the call was never looked at, so it goes back to the mailbox, and fails at close.
    log: list = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Lazy(log))
        await trio.testing.wait_all_tasks_blocked()
        request = _Call(("echo", 1))
        ref._mailbox.put_nowait(request)  # what call() does first: a direct handoff
        if how == "kill":
            ref.kill()
        else:
            ref._cell.process.crash(sv.Shutdown("crashed"))
        with pytest.raises(sv.ActorDeadError) as info:
            await request.wait()
    assert info.value.reason == (sv.KILLED if how == "kill" else sv.Shutdown("crashed"))
    assert ("receive", ("echo", 1)) not in log
    assert log == ([] if how == "kill" else [("stop", sv.Shutdown("crashed"))])


async def test_idle_actor_handed_a_message_then_killed_keeps_it_for_the_next_incarnation(
    autojump_clock,
):
    log: list = []
    child = sv.ChildSpec(id="lazy", start=Lazy, args=(log,))
    spec = sv.SupervisorSpec(sv.SupervisorFlags(intensity=5), [child])
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("lazy")
        await trio.testing.wait_all_tasks_blocked()
        ref.send_nowait("kept")  # handed to the parked incarnation
        ref.kill()  # before it runs
        await trio.testing.wait_all_tasks_blocked()
        assert log == [("receive", "kept")]  # handled once, by the new incarnation
        assert sup.snapshot().children[0].restarts == 1
