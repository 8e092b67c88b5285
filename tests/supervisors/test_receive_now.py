"""``Actor.receive_now`` (``supervisors/_actor.py``): a cast to an idle actor handled at once
in the sender's task, without waking the actor; declined, refused while busy, and raising as
``receive`` would. Every test runs on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import supervisors as sv


class Boom(Exception):
    pass


class Fast(sv.Actor):
    """``receive_now`` takes ("now", x) and a few commands and declines the rest; ``receive``
    logs everything it gets (and can be held busy)."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def receive_now(self, message: Any) -> bool:
        match message:
            case ("now", x):
                self.log.append(("now", x, trio.lowlevel.current_task()))
                return True
            case "raise":
                raise Boom()
            case ("self", x):
                self.ref.send_nowait(("later", x))  # to itself: queued, not taken here
                self.log.append(("now-self", x))
                return True
            case "stop":
                self.stop()
                return True
        return False

    async def receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "hold":
            await message[1].wait()
        self.log.append(("receive", message))

    def on_stop(self, reason: sv.ExitReason) -> None:
        self.log.append(("stop", reason))


async def parked(ref: sv.ActorRef) -> None:
    """Until ``ref``'s loop is parked on its empty mailbox."""
    while not ref._mailbox.receiver_idle():
        await trio.sleep(0)


@asynccontextmanager
async def idle_fast() -> AsyncIterator[tuple[sv.ActorRef, list[Any]]]:
    """An unsupervised ``Fast`` parked on its empty mailbox, and its log; stopped after."""
    log: list[Any] = []
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, Fast(log))
        await parked(ref)
        yield ref, log
        ref.stop()


async def test_a_cast_to_an_idle_actor_is_taken_at_once_in_the_senders_task(autojump_clock):
    async with idle_fast() as (ref, log):
        ref.send_nowait(("now", 1))  # no checkpoint between the cast and the check below
        assert log == [("now", 1, trio.lowlevel.current_task())]
        ref.send_nowait("plain")  # declined: queued for receive, as any cast
        assert log[1:] == []
        await parked(ref)
        assert log[1:] == [("receive", "plain")]


async def test_a_busy_actor_gets_the_cast_in_its_mailbox_in_order(autojump_clock):
    release = trio.Event()
    async with idle_fast() as (ref, log):
        ref.send_nowait(("hold", release))
        await trio.sleep(0.1)  # inside receive now, waiting
        ref.send_nowait("a")
        ref.send_nowait(("now", 1))  # not idle: queued behind "a", handled by receive
        release.set()
        await parked(ref)
        assert log == [
            ("receive", ("hold", release)),
            ("receive", "a"),
            ("receive", ("now", 1)),
        ]


async def test_what_receive_now_casts_to_itself_is_queued_and_handled_after(autojump_clock):
    async with idle_fast() as (ref, log):
        ref.send_nowait(("self", 1))
        assert log == [("now-self", 1)]
        await parked(ref)
        assert log == [("now-self", 1), ("receive", ("later", 1))]


async def test_raising_in_receive_now_crashes_the_actor_as_receive_would(autojump_clock):
    async with idle_fast() as (ref, log):
        ref.send_nowait("raise")  # the sender is not the one that fails
        reason = await ref.wait()
    assert isinstance(reason, sv.Error) and isinstance(reason.exception, Boom)
    assert log == [("stop", reason)]  # on_stop ran, as for a crash in receive


async def test_a_stop_asked_in_receive_now_stops_the_actor(autojump_clock):
    async with idle_fast() as (ref, log):
        ref.send_nowait("stop")
        assert await ref.wait() == sv.NORMAL
    assert log == [("stop", sv.NORMAL)]


class _Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


def sleeper_tree(log: list[Any]) -> sv.SupervisorSpec:
    return sv.SupervisorSpec(
        sv.SupervisorFlags(intensity=3), [sv.ChildSpec(id="fast", start=Fast, args=(log,))]
    )


async def test_a_hibernated_actor_takes_the_cast_without_a_task(autojump_clock):
    log: list[Any] = []
    async with sv.open_supervisor(sleeper_tree(log)) as sup:
        ref = sup.whereis("fast")
        while not ref.hibernate():
            await trio.sleep(0)
        spawned = _Spawned()
        trio.lowlevel.add_instrument(spawned)
        try:
            ref.send_nowait(("now", 1))
            await trio.sleep(1)
        finally:
            trio.lowlevel.remove_instrument(spawned)
        assert spawned.names == [] and ref.is_hibernating()
        assert log == [("now", 1, trio.lowlevel.current_task())]
        ref.send_nowait("plain")  # declined: it wakes, as for any cast
        await trio.sleep(1)
        assert log[1:] == [("receive", "plain")]


@pytest.mark.parametrize("asleep", [False, True])
async def test_a_crash_in_receive_now_is_restarted_by_the_supervisor(autojump_clock, asleep):
    log: list[Any] = []
    async with sv.open_supervisor(sleeper_tree(log)) as sup:
        ref = sup.whereis("fast")
        await parked(ref)
        if asleep:
            assert ref.hibernate()
        ref.send_nowait("raise")
        await trio.sleep(1)
        assert [type(e[1]) for e in log if e[0] == "stop"] == [sv.Error]
        await parked(ref)
        ref.send_nowait(("now", 2))  # the new incarnation takes it
        assert log[-1] == ("now", 2, trio.lowlevel.current_task())


async def test_an_actor_without_receive_now_is_not_touched(autojump_clock):
    class Plain(sv.Actor):
        def __init__(self) -> None:
            self.seen: list[Any] = []

        async def receive(self, message: Any) -> Any:
            self.seen.append(message)

    actor = Plain()
    async with trio.open_nursery() as nursery:
        ref = sv.spawn(nursery, actor)
        await parked(ref)
        ref.send_nowait("x")
        assert actor.seen == []  # queued: the actor's own task takes it
        await parked(ref)
        assert actor.seen == ["x"]
        ref.stop()
