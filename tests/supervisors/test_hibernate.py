"""Hibernation (``ref.hibernate()``, ``sup.hibernate_idle()``) and ``run_beside``
(``supervisors/_actor.py``): an idle supervised worker gives up its task and keeps everything
else; whatever reaches it runs it again with OTP's semantics unchanged. Every test runs on the
autojump clock; the last one runs the differential fuzz with every idle worker hibernated
between commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import pytest
import trio
import trio.testing

import supervisors as sv
from supervisors.testing import _fuzz, run_fuzz


class Boom(Exception):
    pass


class Sleeper(sv.Actor):
    """Counts what it received (state that must survive hibernation); logs its life."""

    def __init__(self, log: list[Any], name: str = "w") -> None:
        self.log, self.name, self.seen = log, name, []

    async def on_start(self) -> None:
        self.log.append(("start", self.name))

    async def receive(self, message: Any) -> Any:
        match message:
            case "boom":
                raise Boom()
            case ("side", fn):
                self.start_task(fn)
            case "defer":
                self.deferred = self.defer_reply()
                return None
        self.seen.append(message)
        return list(self.seen)

    async def on_stop(self, reason: sv.ExitReason) -> None:
        self.log.append(("stop", self.name, reason))


def tasks_named(name: str) -> int:
    count = 0

    def walk(task: Any) -> None:
        nonlocal count
        count += task.name == name
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return count


class Watcher(sv.Actor):
    """Monitors each ref it is sent; records the reason of each ``Down`` in ``downs``."""

    def __init__(self, downs: list[Any]) -> None:
        self.downs = downs

    async def receive(self, message: Any) -> Any:
        if isinstance(message, sv.Down):
            self.downs.append(message.reason)
        else:
            self.monitor(message)


class Linker(sv.Actor):
    """Links to each ref it is sent; on "die" exits with an error (an exit signal to them)."""

    async def receive(self, message: Any) -> Any:
        if message == "die":
            raise sv.Exit(sv.Error(Boom()))
        self.link(message)


def one_for_one(*children: sv.ChildSpec) -> sv.SupervisorSpec:
    return sv.SupervisorSpec(sv.SupervisorFlags(sv.ONE_FOR_ONE, intensity=10, period=5.0), children)


async def asleep(sup: sv.SupervisorRef, child_id: str = "w") -> sv.ActorRef:
    await trio.testing.wait_all_tasks_blocked()
    ref = sup.whereis(child_id)
    assert ref is not None
    assert ref.hibernate()
    await trio.testing.wait_all_tasks_blocked()
    assert ref.is_hibernating() and tasks_named(child_id) == 0
    return ref


async def test_a_hibernated_worker_has_no_task_and_the_next_message_wakes_it(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Sleeper, (log,)))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        assert ref is not None
        await ref.call("a")
        ref = await asleep(sup)
        assert ref.is_alive() and sup.which_children()[0].state == "running"
        ref.send_nowait("b")  # casts queue in order and wake it once
        ref.send_nowait("c")
        assert await ref.call("d") == ["a", "b", "c", "d"]  # its state is the same object
        assert not ref.is_hibernating() and tasks_named("w") == 1
        ref = await asleep(sup)  # and again, from the loop of the woken task
        assert await ref.call("e") == ["a", "b", "c", "d", "e"]
    assert log == [("start", "w"), ("stop", "w", sv.SHUTDOWN)]  # on_start ran once


async def test_only_an_idle_supervised_worker_hibernates(autojump_clock):
    log: list[Any] = []
    async with trio.open_nursery() as nursery:
        loose = sv.spawn(nursery, Sleeper(log))
        await trio.testing.wait_all_tasks_blocked()
        assert not loose.hibernate()  # unsupervised: its nursery could close under it
        loose.kill()
    inner = one_for_one(sv.ChildSpec("w", Sleeper, (log,)))
    spec = one_for_one(sv.ChildSpec("inner", lambda: inner, kind=sv.SUPERVISOR))
    async with sv.open_supervisor(spec) as sup:
        await trio.testing.wait_all_tasks_blocked()
        assert not sup.ref.hibernate() and not sup.whereis("inner").hibernate()  # supervisors
        child = sup.child_supervisor("inner")
        ref = child.whereis("w")
        assert ref is not None
        ref.send_nowait("queued")  # not parked on an empty mailbox
        assert not ref.hibernate()
        await trio.testing.wait_all_tasks_blocked()
        assert child.hibernate_idle() == 1 and child.hibernate_idle() == 0
        assert not ref.hibernate()  # already asleep


async def test_stop_while_hibernated_runs_on_stop(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Sleeper, (log,), restart=sv.TRANSIENT))
    async with sv.open_supervisor(spec) as sup:
        await asleep(sup)
        await sup.terminate_child("w")
        assert log == [("start", "w"), ("stop", "w", sv.SHUTDOWN)]
        ref = await sup.restart_child("w")
        await asleep(sup)
    # the tree's own shutdown wakes it to stop too
    assert log[-1] == ("stop", "w", sv.SHUTDOWN) and ref.is_alive() is False


async def test_kill_while_hibernated_skips_on_stop_and_monitors_see_killed(autojump_clock):
    log: list[Any] = []
    downs: list[Any] = []
    spec = one_for_one(
        sv.ChildSpec("w", Sleeper, (log,)), sv.ChildSpec("watcher", Watcher, (downs,))
    )
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        await sup.whereis("watcher").call(ref)
        await asleep(sup)
        ref.kill()
        await trio.testing.wait_all_tasks_blocked()
        assert downs == [sv.KILLED]
        assert log == [("start", "w"), ("start", "w")]  # no on_stop; restarted (permanent)
        assert await ref.call("x") == ["x"]  # a fresh incarnation behind the same ref


async def test_an_exit_signal_while_hibernated_crashes_it_with_on_stop(autojump_clock):
    log: list[Any] = []

    spec = one_for_one(
        sv.ChildSpec("w", Sleeper, (log,), restart=sv.TEMPORARY),
        sv.ChildSpec("linker", Linker, restart=sv.TEMPORARY),
    )
    async with sv.open_supervisor(spec) as sup:
        ref, linker = sup.whereis("w"), sup.whereis("linker")
        await linker.call(ref)
        await asleep(sup)
        linker.send_nowait("die")
        await trio.testing.wait_all_tasks_blocked()
        assert log[-1][:2] == ("stop", "w") and isinstance(log[-1][2], sv.Error)
        assert not ref.is_alive()


async def test_a_side_task_crash_while_hibernated_restarts_it(autojump_clock):
    log: list[Any] = []
    release = trio.Event()

    async def side() -> None:
        await release.wait()
        raise Boom()

    spec = one_for_one(sv.ChildSpec("w", Sleeper, (log,)))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        await ref.call(("side", side))
        await asleep(sup)  # its side task still runs
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log[1][:2] == ("stop", "w") and isinstance(log[1][2], sv.Error)
        assert log[2] == ("start", "w")


async def test_a_deferred_call_outlives_hibernation(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Sleeper, (log,)))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def ask() -> None:
                try:
                    await ref.call("defer", timeout=None)
                except sv.ActorDeadError as e:
                    results.append(e.reason)

            nursery.start_soon(ask)
            await asleep(sup)
            ref.kill()  # the incarnation ends while asleep: the pending call fails
        assert results == [sv.KILLED]


async def test_a_killed_supervisor_finishes_its_hibernated_children(autojump_clock):
    log: list[Any] = []
    downs: list[Any] = []
    inner = one_for_one(sv.ChildSpec("w", Sleeper, (log,)))
    spec = one_for_one(
        sv.ChildSpec("watcher", Watcher, (downs,)),
        sv.ChildSpec("inner", lambda: inner, kind=sv.SUPERVISOR, shutdown=sv.BRUTAL_KILL),
    )
    async with sv.open_supervisor(spec) as sup:
        child = sup.child_supervisor("inner")
        ref = child.whereis("w")
        await sup.whereis("watcher").call(ref)
        await asleep(child)
        await sup.terminate_child("inner")  # brutal kill: the nursery is cancelled
        await trio.testing.wait_all_tasks_blocked()
        assert downs == [sv.KILLED] and not ref.is_alive()
        assert log == [("start", "w")]  # killed: no on_stop
        with pytest.raises(sv.ActorDeadError):
            ref.send_nowait("late")


class Spawns(trio.abc.Instrument):
    """Counts the tasks spawned while installed."""

    def __init__(self) -> None:
        self.count = 0

    def task_spawned(self, task: Any) -> None:
        self.count += 1


def counting_spawns() -> Spawns:
    spawns = Spawns()
    trio.lowlevel.add_instrument(spawns)
    return spawns


class PlainStopper(Sleeper):
    """``on_stop`` a plain function: it returns None (nothing to await), or on "wait" an
    awaitable that waits for ``release``; it raises on "raise"; it records its context."""

    def __init__(self, log: list[Any], name: str = "w") -> None:
        super().__init__(log, name)
        self.mode = "none"
        self.release = trio.Event()

    async def receive(self, message: Any) -> Any:
        if message in ("wait", "raise"):
            self.mode = message
            return None
        if message == "set":
            VAR.set("mine")
            return None
        return await super().receive(message)

    def on_stop(self, reason: sv.ExitReason) -> Any:  # type: ignore[override]
        self.log.append(("stop", self.name, reason, VAR.get()))
        if self.mode == "raise":
            raise Boom()
        if self.mode == "wait":
            return self._wait()
        return None

    async def _wait(self) -> None:
        await self.release.wait()
        self.log.append(("waited", self.name))


@asynccontextmanager
async def watched_sleeper(mode: str) -> AsyncIterator[tuple[sv.ActorRef, list[Any], list[Any]]]:
    """A temporary ``PlainStopper`` sent ``mode``, monitored by a ``Watcher``, asleep:
    (its ref, its log, the watcher's Down reasons), inside its supervisor."""
    log: list[Any] = []
    downs: list[Any] = []
    spec = one_for_one(
        sv.ChildSpec("w", PlainStopper, (log,), restart=sv.TEMPORARY),
        sv.ChildSpec("watcher", Watcher, (downs,)),
    )
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        await sup.whereis("watcher").call(ref)
        await ref.call(mode)
        await asleep(sup)
        yield ref, log, downs


async def test_stop_while_hibernated_with_a_plain_on_stop_runs_it_in_place(autojump_clock):
    """No task: ``on_stop`` runs in the stopper's call, in the actor's context (a variable its
    task set), and the incarnation has ended when ``stop`` returns."""
    async with watched_sleeper("set") as (ref, log, downs):
        spawns = counting_spawns()
        ref.stop(sv.NORMAL)
        assert log[-1] == ("stop", "w", sv.NORMAL, "mine")
        assert ref._cell.process is None  # ended already
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(spawns)
        assert spawns.count == 0
        assert downs == [sv.NORMAL] and not ref.is_alive()


async def test_a_plain_on_stop_returning_an_awaitable_gets_a_task_only_for_that(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", PlainStopper, (log,), restart=sv.TEMPORARY))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        await ref.call("wait")
        actor = ref._cell.process.actor
        await asleep(sup)
        spawns = counting_spawns()
        ref.stop(sv.NORMAL)
        assert log[-1] == ("stop", "w", sv.NORMAL, "unset")  # the call ran in place
        await trio.testing.wait_all_tasks_blocked()
        assert ref.is_alive() and tasks_named("w") == 1  # awaiting the rest
        actor.release.set()
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(spawns)
        assert spawns.count == 1
        assert log[-1] == ("waited", "w") and not ref.is_alive()


async def test_a_kill_during_the_awaited_rest_of_on_stop_ends_it_killed(autojump_clock):
    async with watched_sleeper("wait") as (ref, log, downs):
        ref.stop(sv.NORMAL)
        await trio.testing.wait_all_tasks_blocked()
        ref.kill()
        await trio.testing.wait_all_tasks_blocked()
        assert downs == [sv.KILLED] and ("waited", "w") not in log


async def test_a_plain_on_stop_raising_in_place_ends_it_with_the_error(autojump_clock):
    async with watched_sleeper("raise") as (ref, _log, downs):
        ref.stop(sv.NORMAL)
        await trio.testing.wait_all_tasks_blocked()
        assert len(downs) == 1 and isinstance(downs[0], sv.Error)
        assert isinstance(downs[0].exception, Boom)


async def test_kill_and_crash_while_hibernated_need_no_task(autojump_clock):
    """A kill ends a sleeper at once (no on_stop); a crash (an exit signal) calls a plain
    on_stop in place, and the supervisor restarts it."""
    log: list[Any] = []

    spec = one_for_one(
        sv.ChildSpec("w", PlainStopper, (log,)),
        sv.ChildSpec("linker", Linker, restart=sv.TEMPORARY),
    )
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        await asleep(sup)
        spawns = counting_spawns()
        ref.kill()
        assert ref._cell.process is None  # ended in the call
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(spawns)
        assert spawns.count == 1  # the restart's task only
        assert log == [("start", "w"), ("start", "w")]  # no on_stop
        await sup.whereis("linker").call(ref)
        await asleep(sup)
        spawns = counting_spawns()
        sup.whereis("linker").send_nowait("die")
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(spawns)
        assert log[2][:2] == ("stop", "w") and isinstance(log[2][2], sv.Error)
        assert log[3] == ("start", "w")
        assert spawns.count == 1  # the restart's task only


class Drowsy(sv.Actor):
    """Starts asleep (``Actor.start_asleep``): no ``on_start``; counts what it received."""

    start_asleep = True

    def __init__(self, log: list[Any]) -> None:
        self.log, self.seen = log, []

    async def receive(self, message: Any) -> Any:
        if message == "boom":
            raise Boom()
        self.seen.append(message)
        return list(self.seen)

    def on_stop(self, reason: sv.ExitReason) -> None:
        self.log.append(("stop", reason))


async def test_a_worker_may_start_asleep_and_its_first_message_wakes_it(autojump_clock):
    """OTP's ``{ok, State, hibernate}`` from ``init``: no task until the first message, then
    as any hibernated worker; a restart starts it asleep again."""
    log: list[Any] = []
    spawns = counting_spawns()
    spec = one_for_one(sv.ChildSpec("w", Drowsy, (log,)))
    async with sv.open_supervisor(spec) as sup:
        await trio.testing.wait_all_tasks_blocked()
        ref = sup.whereis("w")
        assert ref.is_hibernating() and tasks_named("w") == 0
        assert sup.which_children()[0].state == "running"
        started = spawns.count
        assert await ref.call("a") == ["a"]
        assert spawns.count == started + 1 and tasks_named("w") == 1
        ref.send_nowait("boom")  # a crash: restarted, asleep again, on the same ref
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(log[0][1], sv.Error)
        assert ref.is_hibernating() and tasks_named("w") == 0
        assert await ref.call("b") == ["b"]
    trio.lowlevel.remove_instrument(spawns)
    assert log[-1] == ("stop", sv.SHUTDOWN)


async def test_start_asleep_is_ignored_with_on_start_and_for_dynamic_children_too(autojump_clock):
    """With an ``on_start`` its task must run it: the flag is ignored. A simple_one_for_one
    template's instant start honours it."""
    log: list[Any] = []

    class Early(Drowsy):
        async def on_start(self) -> None:
            self.log.append("started")

    spec = one_for_one(sv.ChildSpec("w", Early, (log,)))
    async with sv.open_supervisor(spec) as sup:
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["started"] and not sup.whereis("w").is_hibernating()
    flags = sv.SupervisorFlags(sv.SIMPLE_ONE_FOR_ONE, intensity=10, period=5.0)
    simple = sv.SupervisorSpec(flags, [sv.ChildSpec("d", Drowsy, (log,), restart=sv.TEMPORARY)])
    async with sv.open_supervisor(simple) as sup:
        ref = await sup.start_child(())
        assert ref.is_hibernating() and tasks_named("d") == 0
        assert await ref.call("x") == ["x"]
        ref.stop(sv.NORMAL)  # awake: stops through its loop
        await trio.testing.wait_all_tasks_blocked()
        ref2 = await sup.start_child(())
        ref2.stop(sv.NORMAL)  # asleep: stops in place
        assert not ref2.is_alive() or ref2._cell.process is None
        await trio.testing.wait_all_tasks_blocked()
        assert log[-2:] == [("stop", sv.NORMAL), ("stop", sv.NORMAL)]


class Napper(Sleeper):
    """Asks to hibernate (``Actor.hibernate``) on "nap", from ``receive`` or a side task."""

    async def receive(self, message: Any) -> Any:
        if message == "nap":
            self.hibernate()
        elif message == "nap and stop":
            self.hibernate()
            self.stop()
        elif message == "nap later":
            self.start_task(self._nap_later)
        return await super().receive(message)

    async def _nap_later(self) -> None:
        await trio.sleep(1)
        self.hibernate()


async def test_an_actor_asking_to_hibernate_sleeps_once_its_mailbox_is_empty(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Napper, (log,)))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        assert ref is not None
        assert await ref.call("a") == ["a"]
        assert await ref.call("nap") == ["a", "nap"]  # the reply first, then it sleeps
        await trio.testing.wait_all_tasks_blocked()
        assert ref.is_hibernating() and tasks_named("w") == 0
        assert sup.which_children()[0].state == "running"
        # Woken by the next message, with its state; asked once, so it stays awake after.
        assert await ref.call("b") == ["a", "nap", "b"]
        await trio.testing.wait_all_tasks_blocked()
        assert not ref.is_hibernating() and tasks_named("w") == 1
        # Messages queued behind the request are all handled before it sleeps.
        ref.send_nowait("nap")
        ref.send_nowait("c")
        ref.send_nowait("d")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.is_hibernating() and tasks_named("w") == 0
        assert await ref.call("e") == ["a", "nap", "b", "nap", "c", "d", "e"]
    assert log == [("start", "w"), ("stop", "w", sv.SHUTDOWN)]  # on_start ran once


async def test_hibernate_asked_from_a_side_task_while_parked_sleeps_at_once(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Napper, (log,)))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        assert await ref.call("nap later") == ["nap later"]
        await trio.testing.wait_all_tasks_blocked()
        assert not ref.is_hibernating()  # nothing asked yet: parked as usual
        await trio.sleep(1)  # the side task asks while the loop is parked
        await trio.testing.wait_all_tasks_blocked()
        assert ref.is_hibernating() and tasks_named("w") == 0
        assert await ref.call("f") == ["nap later", "f"]


async def test_hibernate_asked_in_on_start_sleeps_at_the_first_park(autojump_clock):
    class Early(Napper):
        async def on_start(self) -> None:
            await super().on_start()
            self.hibernate()

    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Early, (log,)))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.is_hibernating() and tasks_named("w") == 0
        assert await ref.call("g") == ["g"]
    assert log == [("start", "w"), ("stop", "w", sv.SHUTDOWN)]


async def test_hibernate_asked_is_ignored_where_hibernation_is_not_allowed(autojump_clock):
    log: list[Any] = []
    async with trio.open_nursery() as nursery:
        loose = sv.spawn(nursery, Napper(log))  # unsupervised: its nursery could close
        assert await loose.call("nap") == ["nap"]
        await trio.testing.wait_all_tasks_blocked()
        assert not loose.is_hibernating() and tasks_named("Napper") == 1
        assert await loose.call("h") == ["nap", "h"]
        loose.kill()
    spec = one_for_one(sv.ChildSpec("w", Napper, (log,), restart=sv.TEMPORARY))
    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        ref.send_nowait("nap and stop")  # stopping: on_stop runs instead of a sleep
        await trio.testing.wait_all_tasks_blocked()
        assert not ref.is_alive() and log[-1] == ("stop", "w", sv.NORMAL)


async def test_run_beside_runs_in_the_callers_task_and_ends_with_the_actor(autojump_clock):
    log: list[Any] = []
    seen: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Sleeper, (log,), restart=sv.TEMPORARY))

    async def reader(actor: Sleeper, tag: str) -> None:
        seen.append((tag, actor.name, trio.lowlevel.current_task().name))
        await trio.sleep_forever()

    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sv.run_beside, ref, reader, "r", name="host")
                await asleep(sup)  # the actor sleeps, its reader runs
                assert seen == [("r", "w", "host")]
                ref.kill()  # the reader is cancelled and run_beside returns
        with pytest.raises(sv.ActorDeadError):
            await sv.run_beside(ref, reader, "again")


async def test_run_beside_with_the_callers_scope_cancels_it_when_the_actor_exits(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(
        sv.ChildSpec("w", Sleeper, (log,), restart=sv.TEMPORARY),
        sv.ChildSpec("v", Sleeper, (log,), restart=sv.TEMPORARY),
    )
    after: list[str] = []

    async def reader(actor: Sleeper, forever: bool) -> None:
        if forever:
            await trio.sleep_forever()

    async def host(ref: sv.ActorRef, forever: bool, done: list[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            await sv.run_beside(ref, reader, forever, scope=scope)
            after.append(ref.name)
            await trio.sleep(5)  # the side task is over: the actor's exit leaves us alone
            after.append(ref.name)
        done.append(scope)

    async with sv.open_supervisor(spec) as sup:
        w, v = sup.whereis("w"), sup.whereis("v")
        done: list[trio.CancelScope] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(host, w, True, done)
                nursery.start_soon(host, v, False, done)
                await asleep(sup)
                w.kill()  # cancels the host's own scope: nothing after run_beside runs
                await trio.sleep(1)
                v.kill()
        assert [s.cancelled_caught for s in done] == [True, False]
        assert after == ["v", "v"]


async def test_run_beside_crashes_the_actor_when_it_raises(autojump_clock):
    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Sleeper, (log,)))

    async def reader(actor: Sleeper) -> None:
        actor.ref.send_nowait("from the reader")
        raise Boom()

    async with sv.open_supervisor(spec) as sup:
        ref = sup.whereis("w")
        await sv.run_beside(ref, reader)  # returns: the failure went to the actor
        await trio.testing.wait_all_tasks_blocked()
        assert log[1][:2] == ("stop", "w") and isinstance(log[1][2], sv.Error)
        assert log[2] == ("start", "w")


def _counting_sleepers(count_tasks: Any, worlds: list[Any]) -> Any:
    """The fuzz harness's task count, with a task added back for each hibernated worker: it
    expects two tasks per live worker (its loop and a side task), and a hibernated one has
    only the side task."""

    def count_with_sleepers(name: str) -> int | None:
        tasks = count_tasks(name)
        if tasks is None or not worlds:
            return tasks
        return tasks + sum(1 for worker in worlds[0].live if worker.ref.is_hibernating())

    return count_with_sleepers


def _fuzz_with_idle_workers_hibernated() -> int:
    """Run the fuzz with every idle worker hibernated between commands; how many were."""
    settle, count_tasks = _fuzz._Harness.settle, _fuzz._count_tasks
    worlds: list[Any] = []
    hibernated = 0

    async def settle_and_hibernate(self: Any, model: Any) -> None:
        nonlocal hibernated
        await settle(self, model)
        worlds[:] = [self.world]
        asleep = [worker for worker in list(self.world.live) if worker.ref.hibernate()]
        if asleep:
            hibernated += len(asleep)
            await trio.testing.wait_all_tasks_blocked()

    with (
        mock.patch.object(_fuzz._Harness, "settle", settle_and_hibernate),
        mock.patch.object(_fuzz, "_count_tasks", _counting_sleepers(count_tasks, worlds)),
    ):
        run_fuzz(300)
    return hibernated


def test_the_model_holds_with_every_idle_worker_hibernated():
    # the commands met sleeping workers, not only awake ones
    assert _fuzz_with_idle_workers_hibernated() > 300


def test_the_model_holds_with_every_worker_asking_to_hibernate():
    """``Actor.hibernate`` from ``on_start`` and before every message: each worker sleeps
    whenever its mailbox runs empty, and the model still holds."""
    from supervisors.testing._recording import RecordingWorker

    settle, count_tasks = _fuzz._Harness.settle, _fuzz._count_tasks
    receive, on_start = RecordingWorker.receive, RecordingWorker.on_start
    worlds: list[Any] = []
    asleep = 0

    async def napping_on_start(self: Any) -> None:
        await on_start(self)
        self.hibernate()

    async def napping_receive(self: Any, message: Any) -> Any:
        self.hibernate()
        return await receive(self, message)

    async def settle_and_count(self: Any, model: Any) -> None:
        nonlocal asleep
        await settle(self, model)
        worlds[:] = [self.world]
        asleep += sum(1 for worker in self.world.live if worker.ref.is_hibernating())

    count_with_sleepers = _counting_sleepers(count_tasks, worlds)

    with (
        mock.patch.object(RecordingWorker, "on_start", napping_on_start),
        mock.patch.object(RecordingWorker, "receive", napping_receive),
        mock.patch.object(_fuzz._Harness, "settle", settle_and_count),
        mock.patch.object(_fuzz, "_count_tasks", count_with_sleepers),
    ):
        run_fuzz(300)
    assert asleep > 300  # the commands met sleeping workers


def test_the_model_holds_with_sleepers_stopping_in_place():
    """The workers' ``on_stop`` a plain function, every idle worker hibernated between
    commands: their stops, crashes and kills while asleep end them without a task, and the
    model still holds."""
    from supervisors.testing._recording import RecordingWorker

    def plain_on_stop(self: Any, reason: sv.ExitReason) -> None:
        self.world.log.append(("stop", self.path))

    with mock.patch.object(RecordingWorker, "on_stop", plain_on_stop):
        assert _fuzz_with_idle_workers_hibernated() > 300


VAR: Any = __import__("contextvars").ContextVar("VAR", default="unset")


async def test_hibernation_keeps_the_context_variables_the_actor_set(autojump_clock):
    """A sleeper whose task set nothing keeps its supervisor's context (no object of its
    own); one whose task set a variable keeps its own, and wakes up with the value."""

    class Setter(Napper):
        async def receive(self, message: Any) -> Any:
            if message == "set":
                VAR.set("mine")
            elif message == "get":
                return VAR.get()
            return await super().receive(message)

    log: list[Any] = []
    spec = one_for_one(sv.ChildSpec("w", Setter, (log,)), sv.ChildSpec("v", Setter, (log,)))
    async with sv.open_supervisor(spec) as sup:
        w, v = sup.whereis("w"), sup.whereis("v")
        await w.call("set")
        await v.call("a")
        await asleep(sup, "w")
        await asleep(sup, "v")
        home = sup._sup._context
        assert v._cell.process.context is home
        assert w._cell.process.context is not home
        assert await w.call("get") == "mine"
        assert await v.call("get") == "unset"
        await asleep(sup, "w")  # and again, from the woken task's copy
        assert await w.call("get") == "mine"
