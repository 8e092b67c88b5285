"""pykka thread actors under a supervisor (``supervisors/_thread.py``). Threads cannot follow
the mock clock, so these tests use real time, each bounded by ``trio.fail_after``."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
import trio
import trio.testing

import supervisors as sv
from supervisors._thread import ThreadProcess

LIMIT = 10  # seconds: a bound that only a hang reaches


class Crash(Exception):
    pass


class Recorder:
    """Thread-safe record of what the thread actors did."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple] = []

    def add(self, *event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def kinds(self, kind: str) -> list[tuple]:
        with self.lock:
            return [e for e in self.events if e[0] == kind]


class Blocking(sv.ThreadActor):
    """Handles messages in its own thread; may block, crash or stop itself."""

    def __init__(self, rec: Recorder, fail_start: bool = False) -> None:
        super().__init__()
        self.rec, self.fail_start = rec, fail_start

    def on_start(self) -> None:
        if self.fail_start:
            raise Crash("no start")
        self.rec.add("start", threading.current_thread().name)

    def on_receive(self, message: Any) -> Any:
        self.rec.add("receive", message)
        match message:
            case ("sleep", seconds):
                time.sleep(seconds)
                self.rec.add("slept", seconds)
                return "slept"
            case "crash":
                raise Crash("in on_receive")
            case "stop":
                self.stop()  # pykka's own stop: a NORMAL exit
                return "stopping"
            case "thread":
                return threading.current_thread().name
        return ("echo", message)

    def on_stop(self) -> None:
        self.rec.add("stop", threading.current_thread().name)


def blocking_spec(rec: Recorder, **kwargs: Any) -> sv.ChildSpec:
    return sv.ChildSpec(id="t", start=Blocking, args=(rec,), **kwargs)


def supervised(*children: sv.ChildSpec, **flags: Any) -> sv.SupervisorSpec:
    return sv.SupervisorSpec(sv.SupervisorFlags(**flags), children)


def actor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("Blocking-")]


@pytest.fixture(autouse=True)
def no_thread_survives():
    yield
    assert actor_threads() == []
    # A killed thread actor skips pykka's _stop: we unregister it ourselves.
    assert not [r for r in pykka.ActorRegistry.get_all() if issubclass(r.actor_class, Blocking)]


async def wait_for(predicate, timeout: float = LIMIT) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


def test_pykka_internals_we_rely_on():
    # _thread.py overrides or calls these; a pykka release that renames them breaks us.
    from pykka._envelope import Envelope

    for name in (
        "_actor_loop",
        "_actor_loop_setup",
        "_actor_loop_running",
        "_actor_loop_teardown",
        "_handle_receive",
        "_handle_failure",
        "_start_actor_loop",
    ):
        assert callable(getattr(pykka.Actor, name)), name
    assert isinstance(pykka.ThreadingActor().actor_stopped, threading.Event)
    envelope = Envelope("m")
    assert (envelope.message, envelope.reply_to) == ("m", None)


async def test_call_and_send_run_in_the_actor_thread():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        async with sv.open_supervisor(supervised(blocking_spec(rec))) as sup:
            ref = sup.whereis("t")
            assert await ref.call(1) == ("echo", 1)
            for i in range(50):
                await ref.send(i)
            assert await ref.call("last") == ("echo", "last")
            assert [e[1] for e in rec.kinds("receive")] == [1, *range(50), "last"]
            thread = await ref.call("thread")
            assert thread != threading.current_thread().name
            assert sup.snapshot().children[0].kind == "thread"
    # The supervisor's shutdown stopped the thread; on_stop ran in that thread.
    assert rec.kinds("stop") == [("stop", thread)]


async def test_crash_is_error_the_call_fails_and_the_child_restarts():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        async with sv.open_supervisor(supervised(blocking_spec(rec), intensity=5)) as sup:
            ref = sup.whereis("t")
            first = await ref.call("thread")
            with pytest.raises(sv.ActorDeadError) as info:
                await ref.call("crash")
            reason = info.value.reason
            assert isinstance(reason, sv.Error) and isinstance(reason.exception, Crash)
            # Running again once the new thread's on_start has finished (and told us).
            await wait_for(
                lambda: sup.snapshot().children[0].restarts == 1 and sup.whereis("t") is ref
            )
            assert len(rec.kinds("start")) == 2
            second = await ref.call("thread")
            assert second != first
            assert sup.snapshot().children[0].restarts == 1
    assert rec.kinds("stop") == [("stop", second)]  # pykka: no on_stop after a crash


async def test_transient_thread_actor_stopping_itself_is_normal():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        spec = supervised(blocking_spec(rec, restart=sv.TRANSIENT))
        async with sv.open_supervisor(spec) as sup:
            ref = sup.whereis("t")
            assert await ref.call("stop") == "stopping"
            await wait_for(lambda: sup.which_children()[0].state == "terminated")
            assert not ref.is_alive()
            assert len(rec.kinds("stop")) == 1


async def test_start_failure_is_start_failed():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        async with sv.open_supervisor(supervised()) as sup:
            bad = sv.ChildSpec(id="bad", start=Blocking, args=(rec, True))
            with pytest.raises(sv.StartFailed) as info:
                await sup.start_child(bad)
            assert isinstance(info.value.reason, sv.Error)
            assert isinstance(info.value.reason.exception, Crash)


async def test_brutal_kill_waits_for_the_current_message_and_skips_on_stop():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        spec = supervised(blocking_spec(rec, shutdown=sv.BRUTAL_KILL))
        async with sv.open_supervisor(spec) as sup:
            ref = sup.whereis("t")
            ref.send_nowait(("sleep", 0.2))
            await wait_for(lambda: rec.kinds("receive"))
            await sup.terminate_child("t")
            # A thread cannot be cancelled: the kill lands when the message returns.
            assert rec.kinds("slept") == [("slept", 0.2)]
            assert rec.kinds("stop") == []
            assert actor_threads() == []


async def test_shutdown_timeout_that_expires_kills_the_thread():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        spec = supervised(blocking_spec(rec, shutdown=0.05))
        async with sv.open_supervisor(spec) as sup:
            ref = sup.whereis("t")
            watcher_downs: list[sv.Down] = []

            class Watcher(sv.Actor):
                async def on_start(self):
                    self.monitor(ref)

                async def receive(self, message):
                    watcher_downs.append(message)

            async with trio.open_nursery() as nursery:
                w = await sv.spawn_started(nursery, Watcher())
                ref.send_nowait(("sleep", 0.3))
                await wait_for(lambda: rec.kinds("receive"))
                await sup.terminate_child("t")
                await wait_for(lambda: watcher_downs)
                w.stop()
            assert [d.reason for d in watcher_downs] == [sv.KILLED]
            assert rec.kinds("stop") == []


async def test_kill_puts_forwarded_messages_back_for_the_next_incarnation():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        async with sv.open_supervisor(supervised(blocking_spec(rec), intensity=5)) as sup:
            ref = sup.whereis("t")
            ref.send_nowait(("sleep", 0.2))
            await wait_for(lambda: rec.kinds("receive"))
            for i in range(5):
                ref.send_nowait(i)  # forwarded to the thread's inbox (window 16)
            await trio.testing.wait_all_tasks_blocked()
            ref.kill()
            assert await ref.call("after") == ("echo", "after")
            received = [e[1] for e in rec.kinds("receive")]
            # Not handled by the killed thread, not lost: handled by the next one, in order.
            assert received == [("sleep", 0.2), 0, 1, 2, 3, 4, "after"]
            assert rec.kinds("stop") == []


async def test_calls_in_flight_fail_when_the_thread_actor_is_gone_for_good():
    rec = Recorder()
    with trio.fail_after(LIMIT):
        spec = supervised(blocking_spec(rec, restart=sv.TEMPORARY))
        async with sv.open_supervisor(spec) as sup:
            ref = sup.whereis("t")
            outcomes: list[Any] = []

            async def call(message):
                try:
                    outcomes.append(await ref.call(message, timeout=None))
                except sv.ActorDeadError as e:
                    outcomes.append(e.reason)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, ("sleep", 0.1))
                await wait_for(lambda: rec.kinds("receive"))
                nursery.start_soon(call, "queued")
                await trio.testing.wait_all_tasks_blocked()
                ref.kill()
            assert outcomes == ["slept", sv.KILLED]


async def test_window_bounds_what_the_thread_holds():
    class Narrow(Blocking):
        window = 2
        mailbox_size = 3

    rec = Recorder()
    with trio.fail_after(LIMIT):
        child = sv.ChildSpec(id="n", start=Narrow, args=(rec,))
        async with sv.open_supervisor(supervised(child)) as sup:
            ref = sup.whereis("n")
            ref.send_nowait(("sleep", 0.2))
            await wait_for(lambda: rec.kinds("receive"))
            ref.send_nowait("in the window")
            await trio.testing.wait_all_tasks_blocked()
            for i in range(3):
                ref.send_nowait(i)  # the mailbox's bound: 3
            with pytest.raises(sv.MailboxFull):
                ref.send_nowait("over")
            assert await ref.call("done") == ("echo", "done")


async def test_link_from_a_trio_actor_to_a_thread_actor():
    rec = Recorder()

    class Linked(sv.Actor):
        async def receive(self, message):
            self.link(message)

    with trio.fail_after(LIMIT):
        async with sv.open_supervisor(supervised(blocking_spec(rec), intensity=5)) as sup:
            t = sup.whereis("t")
            async with trio.open_nursery() as nursery:
                peer = sv.spawn(nursery, Linked())
                await peer.call(t)
                with pytest.raises(sv.ActorDeadError):
                    await t.call("crash")
                reason = await peer.wait()
            assert isinstance(reason, sv.Error) and isinstance(reason.exception, Crash)


async def test_no_thread_survives_its_supervisor_even_when_cancelled():
    rec = Recorder()
    inner = supervised(blocking_spec(rec))
    tree = supervised(
        sv.ChildSpec(id="s", start=lambda: inner, kind=sv.SUPERVISOR, shutdown=sv.BRUTAL_KILL)
    )
    with trio.fail_after(LIMIT):
        async with sv.open_supervisor(tree) as sup:
            t = sup.child_supervisor("s").whereis("t")
            t.send_nowait(("sleep", 0.2))
            await wait_for(lambda: rec.kinds("receive"))
            assert len(actor_threads()) == 1
            # Killing the child supervisor cancels the thread's trio side, which must still
            # wait for the thread to end.
            await sup.terminate_child("s")
            assert actor_threads() == []
            assert not t.is_alive()


async def test_thread_process_is_a_process():
    # Links, monitors and the supervisor treat both kinds alike.
    assert issubclass(ThreadProcess, sv._actor._Process)


async def test_a_thread_actor_linked_to_a_crashing_trio_actor_exits_with_its_reason():
    rec = Recorder()

    class Crasher(sv.Actor):
        async def receive(self, message):
            if message == "crash":
                raise Crash("trio side")
            self.link(message)

    with trio.fail_after(LIMIT):
        spec = supervised(blocking_spec(rec, restart=sv.TEMPORARY))
        async with sv.open_supervisor(spec) as sup:
            t = sup.whereis("t")
            async with trio.open_nursery() as nursery:
                peer = sv.spawn(nursery, Crasher())
                await peer.call(t)
                peer.send_nowait("crash")
            reason = await t.wait()
            # The exit signal is a crash for the thread actor: a stop with that reason, so its
            # (pykka) on_stop runs in its thread.
            assert isinstance(reason, sv.Error) and str(reason.exception) == "trio side"
            assert len(rec.kinds("stop")) == 1
