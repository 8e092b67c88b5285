"""The connection writer's pure decisions (``_connection.py``), and the messages that reach it.

``writer_action`` decides, after each message, whether the writer holds its items back for the
next messages, yields once, or writes. ``write_chunks`` groups a flush's frames into socket
writes. ``Node.notify`` splits an ``OutAccepted`` that carries a receipt for a cluster link.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actorchat.node._connection import (
    COALESCE_LIMIT,
    HOLD,
    HOLD_LIMIT,
    QUIET_SKIPS,
    WRITE,
    YIELD,
    after_yield,
    write_chunks,
    writer_action,
)
from actorchat.node._messages import OutAccepted, OutReceipt
from actorchat.node._node import GC_THRESHOLDS, Node, tune_gc


def test_idle_connection_yields_once_then_writes():
    assert writer_action(depth=0, pending=1, held=0) is YIELD
    # after the yield, nothing new arrived: write
    assert writer_action(depth=0, pending=1, held=1) is WRITE


def test_more_mail_queued_is_held_for_the_same_frame():
    assert writer_action(depth=3, pending=5, held=0) is HOLD
    assert writer_action(depth=1, pending=5, held=7) is HOLD


def test_mail_trickling_in_never_keeps_the_writer_from_writing():
    """The stall seen at half load: each yield found one new message. Now a message that
    finds the mailbox empty after anything was held writes, without a second yield."""
    held, writes, yields = 0, 0, 0
    for _ in range(100):  # a message arrives during every yield
        action = writer_action(depth=0, pending=1, held=held)
        if action is YIELD:
            yields += 1
            action = writer_action(depth=1, pending=1, held=1)  # one arrived meanwhile
        if action is HOLD:
            held += 1
        else:
            held, writes = 0, writes + 1
    assert yields == 50 and writes == 50  # every second message writes


def test_a_mailbox_that_never_empties_is_written_every_hold_limit_messages():
    held, writes = 0, 0
    for _ in range(10 * HOLD_LIMIT):
        if writer_action(depth=5, pending=1, held=held) is HOLD:
            held += 1
        else:
            held, writes = 0, writes + 1
    assert writes == 10 * HOLD_LIMIT // (HOLD_LIMIT + 1)


def test_many_pending_items_are_written_at_once():
    assert writer_action(depth=5, pending=COALESCE_LIMIT, held=0) is WRITE
    assert writer_action(depth=0, pending=COALESCE_LIMIT, held=0) is WRITE


@given(st.lists(st.text(max_size=50), min_size=1, max_size=30), st.integers(1, 120))
def test_write_chunks_keep_order_and_bound_each_write(frames, limit):
    chunks = write_chunks(frames, limit)
    assert [f for chunk in chunks for f in chunk] == frames
    assert all(chunk for chunk in chunks)
    for chunk in chunks:
        assert len(chunk) == 1 or sum(map(len, chunk)) <= limit


def test_accepted_with_its_receipt_is_split_for_a_cluster_link():
    sent: list[tuple[str, Any]] = []
    fake = SimpleNamespace(
        registry=SimpleNamespace(connections={}),
        cluster=SimpleNamespace(notify_remote=lambda user, m: sent.append((user, m))),
    )
    receipt = OutReceipt("delivered", "bob", ("i1", "i2"))
    Node.notify(fake, "alice", OutAccepted(("i1", "i2"), receipt))  # type: ignore[arg-type]
    assert [m for _, m in sent] == [OutAccepted(("i1", "i2"), receipt), receipt]
    assert {u for u, _ in sent} == {"alice"}


def test_accepted_with_its_receipt_is_one_message_to_a_local_connection():
    got: list[Any] = []
    conn = SimpleNamespace(send_nowait=got.append)
    fake = SimpleNamespace(registry=SimpleNamespace(connections={"alice": conn}), cluster=None)
    receipt = OutReceipt("delivered", "bob", ("i1",))
    Node.notify(fake, "alice", OutAccepted(("i1",), receipt))  # type: ignore[arg-type]
    assert got == [OutAccepted(("i1",), receipt)]


def test_tune_gc_freezes_the_loaded_heap_and_collects_less_often():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_yield_that_found_nothing_makes_the_next_flushes_write_at_once():
    """A connection getting a message now and then: its first flush yields, finds nothing,
    and the next QUIET_SKIPS flushes write without a pass of the scheduler; then it tries
    a yield again."""
    quiet = 0
    yields = 0
    for _ in range(3 * (QUIET_SKIPS + 1)):
        action = writer_action(depth=0, pending=1, held=0, quiet=quiet)
        if action is YIELD:
            yields += 1
            quiet = after_yield(depth=0)
            action = writer_action(depth=0, pending=1, held=1)
        else:
            quiet -= 1
        assert action is WRITE
    assert yields == 3


def test_a_yield_that_found_messages_keeps_yielding_and_load_ends_the_skipping():
    assert after_yield(depth=2) == 0  # under load: yield at every flush
    # skipping, but messages are queued: hold them (and the connection yields again later)
    assert writer_action(depth=3, pending=1, held=0, quiet=QUIET_SKIPS) is HOLD
    assert writer_action(depth=0, pending=1, held=0, quiet=0) is YIELD
