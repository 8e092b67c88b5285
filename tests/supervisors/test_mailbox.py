"""The bounded mailbox (``supervisors/_mailbox.py``): FIFO, the bound, signals past the bound,
parked senders in order, close/reopen, drain and requeue, cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from supervisors import ActorDeadError, MailboxFull
from supervisors._mailbox import WAKE, Mailbox


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least one"):
        Mailbox(0)


async def test_fifo_and_len():
    box = Mailbox(10)
    for i in range(5):
        box.put_nowait(i)
    assert len(box) == 5
    assert [await box.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(box) == 0


async def test_put_nowait_at_the_bound_raises_mailbox_full():
    box = Mailbox(2)
    box.put_nowait(1)
    box.put_nowait(2)
    with pytest.raises(MailboxFull, match="2 messages"):
        box.put_nowait(3)
    assert len(box) == 2


async def test_signals_ignore_the_bound():
    box = Mailbox(1)
    box.put_nowait("m")
    box.put_signal("s1")
    box.put_signal("s2")
    assert [box.get_nowait() for _ in range(3)] == ["m", "s1", "s2"]


def test_get_nowait_on_empty_raises_would_block():
    with pytest.raises(trio.WouldBlock):
        Mailbox(1).get_nowait()


async def test_parked_receiver_is_handed_the_item():
    box = Mailbox(1)
    got = []

    async def receiver():
        got.append(await box.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        # Even at capacity 1 with a parked receiver, nothing is queued: it goes straight over.
        box.put_nowait("direct")
        assert len(box) == 0
    assert got == ["direct"]


async def test_blocked_senders_are_admitted_in_fifo_order():
    box = Mailbox(1)
    box.put_nowait(0)
    order = []

    async def sender(i):
        await box.put(i)
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in (1, 2, 3):
            nursery.start_soon(sender, i)
            await trio.testing.wait_all_tasks_blocked()
        assert order == []
        # A new put_nowait must not overtake the parked senders.
        with pytest.raises(MailboxFull):
            box.put_nowait(99)
        assert [await box.get() for _ in range(4)] == [0, 1, 2, 3]
    assert order == [1, 2, 3]


async def test_cancelled_sender_leaves_no_item_behind(autojump_clock):
    box = Mailbox(1)
    box.put_nowait(0)
    with trio.move_on_after(1):
        await box.put("never")
    assert box.get_nowait() == 0
    with pytest.raises(trio.WouldBlock):
        box.get_nowait()


async def test_cancelled_receiver_does_not_swallow_the_next_item(autojump_clock):
    box = Mailbox(1)
    with trio.move_on_after(1):
        await box.get()
    box.put_nowait("kept")
    assert len(box) == 1
    assert await box.get() == "kept"


async def test_wake_returns_the_wake_marker_to_a_parked_receiver():
    box = Mailbox(1)
    got = []

    async def receiver():
        got.append(await box.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        box.wake()
    assert got == [WAKE]
    box.wake()  # no receiver: nothing happens, nothing queued
    assert len(box) == 0


async def test_close_refuses_mail_returns_queue_and_fails_parked_senders():
    box = Mailbox(1)
    box.put_nowait("queued")
    failed = []

    async def sender():
        try:
            await box.put("parked")
        except ActorDeadError as e:
            failed.append(e.reason)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert box.close("why") == ["queued"]
    assert failed == ["why"]
    assert box.closed and box.closed_reason == "why"
    with pytest.raises(ActorDeadError) as info:
        box.put_nowait("late")
    assert info.value.reason == "why"
    box.put_signal("dropped")  # signals to a closed mailbox vanish
    assert len(box) == 0


async def test_reopen_takes_mail_again():
    box = Mailbox(2)
    box.close("terminated")
    box.reopen()
    assert not box.closed and box.closed_reason is None
    box.put_nowait(1)
    assert await box.get() == 1


async def test_drain_takes_everything_and_admits_parked_senders():
    box = Mailbox(2)
    box.put_nowait("a")
    box.put_nowait("b")

    async def sender():
        await box.put("c")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert box.drain() == ["a", "b"]
    assert box.get_nowait() == "c"


async def test_requeue_front_goes_ahead_in_order_past_the_bound():
    box = Mailbox(2)
    box.put_nowait("x")
    box.put_nowait("y")
    box.requeue_front(["a", "b"])
    assert [box.get_nowait() for _ in range(4)] == ["a", "b", "x", "y"]


async def test_requeue_front_hands_the_first_to_a_parked_receiver():
    box = Mailbox(1)
    got = []

    async def receiver():
        got.append(await box.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        box.requeue_front(["a", "b"])
    assert got == ["a"]
    assert box.get_nowait() == "b"


def test_requeue_front_into_a_closed_mailbox_is_dropped():
    box = Mailbox(1)
    box.close()
    box.requeue_front(["a"])
    assert len(box) == 0


async def test_get_is_a_checkpoint_even_when_an_item_is_ready():
    box = Mailbox(1)
    box.put_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.get()
    assert scope.cancelled_caught
    assert len(box) == 1  # not consumed
