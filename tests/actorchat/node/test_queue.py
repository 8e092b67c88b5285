"""The delivery rules of one mailbox, without sockets, tasks or clocks (``_queue.py``)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from actorchat.node import DeliveryQueue
from actorchat.node._user import ticker_nap
from actorchat.store import MailRow


def q(**kw) -> DeliveryQueue:
    queue = DeliveryQueue("bob", **kw)
    queue.load(None, [], [], 500)
    return queue


def test_online_delivery_then_ack_accepts_and_receipts() -> None:
    queue = q()
    queue.attach(now=1.0)
    fx = queue.incoming("alice", "m1", "hi", 2.0)
    assert [i.id for i in fx.deliver] == ["m1"] and not fx.store and not fx.accepted
    fx = queue.ack([fx.deliver[0].mid], 3.0)
    assert fx.accepted == {"alice": ["m1"]}
    assert fx.delivered == {"alice": ["m1"]}
    assert fx.write_behind is not None and len(fx.write_behind.put_dedupe) == 1
    assert not queue.items


def test_offline_recipient_stores_and_accepts_after_commit() -> None:
    queue = q()
    fx = queue.incoming("alice", "m1", "hi", 2.0)
    assert [i.id for i in fx.store] == ["m1"] and not fx.accepted and not fx.deliver
    fx = queue.stored(fx.store, 2.1)
    assert fx.accepted == {"alice": ["m1"]}
    assert queue.idle()


def test_keys_increase_and_stay_above_the_clock() -> None:
    queue = q()
    a = queue.incoming("alice", "1", "", 5.0).store[0]
    b = queue.incoming("alice", "2", "", 4.0).store[0]  # the clock went back: keys do not
    assert b.key > a.key >= 5_000_000
    assert a.mid == str(a.key)


def test_keys_continue_above_what_the_store_holds() -> None:
    queue = DeliveryQueue("bob")
    queue.load(10**17, [], [], 500)
    assert queue.incoming("alice", "1", "", 1.0).store[0].key > 10**17


def test_retry_is_never_queued_twice_and_is_accepted_again() -> None:
    queue = q()
    queue.attach(1.0)
    first = queue.incoming("alice", "m1", "hi", 2.0).deliver[0]
    retry = queue.incoming("alice", "m1", "hi", 2.5)
    assert not retry.deliver and not retry.store and not retry.accepted  # not accepted yet
    queue.ack([first.mid], 3.0)
    again = queue.incoming("alice", "m1", "hi", 4.0)
    assert again.accepted == {"alice": ["m1"]} and not again.deliver


def test_reconnect_redelivers_every_unacked_message_in_order_with_the_same_mids() -> None:
    queue = q()
    queue.attach(1.0)
    sent = [queue.incoming("alice", str(i), "", 2.0).deliver[0] for i in range(5)]
    queue.ack([sent[1].mid], 3.0)
    fx = queue.detach()
    assert [i.id for i in fx.store] == ["0", "2", "3", "4"]
    fx = queue.attach(4.0)
    assert [i.mid for i in fx.deliver] == [sent[i].mid for i in (0, 2, 3, 4)]


def test_window_limits_unacked_deliveries() -> None:
    queue = q(window=2)
    queue.attach(1.0)
    delivered = [i for n in range(4) for i in queue.incoming("a", str(n), "", 2.0).deliver]
    assert [i.id for i in delivered] == ["0", "1"]
    fx = queue.ack([delivered[0].mid], 3.0)
    assert [i.id for i in fx.deliver] == ["2"]


def test_overdue_ack_stores_the_message() -> None:
    queue = q()
    queue.attach(0.0)
    queue.incoming("alice", "m1", "", 1.0)
    assert not queue.overdue(5.0, ack_timeout=10.0).store
    assert [i.id for i in queue.overdue(11.0, ack_timeout=10.0).store] == ["m1"]


def test_mail_behind_a_full_window_is_stored_after_the_ack_timeout() -> None:
    # A recipient that reads but never acks must not keep senders waiting (e2e:
    # test_silent_recipient_does_not_hold_up_acceptance).
    queue = q(window=2)
    queue.attach(0.0)
    for n in range(5):
        queue.incoming("alice", str(n), "", 1.0)
    assert not queue.overdue(5.0, ack_timeout=10.0).store
    assert [i.id for i in queue.overdue(11.0, ack_timeout=10.0).store] == ["0", "1", "2", "3", "4"]


def test_next_due_is_when_overdue_first_finds_something() -> None:
    # The mailbox's ticker sleeps until then (``ticker_nap``), not a fixed second.
    queue = q(window=2)
    queue.attach(0.0)
    assert queue.next_due(10.0) is None  # nothing here
    delivered = [queue.incoming("alice", str(n), "", 1.0 + n).deliver for n in range(3)]
    assert queue.next_due(10.0) == 11.0  # "0", sent at 1.0
    for t in (10.9, 11.0):
        assert bool(queue.overdue(t, ack_timeout=10.0).store) == (t >= queue.next_due(10.0))
    queue.ack([delivered[0][0].mid], 4.0)  # "2" moves into the window: sent at 4.0
    assert queue.next_due(10.0) == 12.0  # "1", sent at 2.0
    queue.ack([delivered[1][0].mid], 5.0)
    assert queue.next_due(10.0) == 14.0  # "2": sent at 4.0, later than it arrived
    fx = queue.overdue(14.0, ack_timeout=10.0)
    queue.stored(fx.store, 14.1)
    assert queue.next_due(10.0) is None  # stored: it can no longer be overdue


def test_ticker_nap_sleeps_until_due_within_its_bounds() -> None:
    assert ticker_nap(None, 100.0, period=1.0, ack_timeout=10.0) == 1.0
    assert ticker_nap(107.0, 100.0, period=1.0, ack_timeout=10.0) == 7.0
    assert ticker_nap(100.5, 100.0, period=1.0, ack_timeout=10.0) == 1.0  # at least a period
    assert ticker_nap(90.0, 100.0, period=1.0, ack_timeout=10.0) == 1.0  # overdue already
    assert ticker_nap(150.0, 100.0, period=1.0, ack_timeout=10.0) == 10.0  # a wall clock jump


def test_overflow_spills_to_the_store_and_pages_back_in_order() -> None:
    queue = q(bound=2)
    queue.attach(0.0)
    fxs = [queue.incoming("alice", str(n), "", 1.0) for n in range(5)]
    spilled = [i for fx in fxs[2:] for i in fx.store]
    assert [i.id for i in spilled] == ["2", "3", "4"] and queue.spilled
    assert all(i.key not in queue.items for i in spilled)
    queue.stored(spilled, 1.5)
    delivered = [i for fx in fxs for i in fx.deliver]
    fx = queue.ack([i.mid for i in delivered], 2.0)
    assert fx.page_in
    rows = [MailRow("bob", i.key, i.sender, i.id, i.body, i.ts) for i in spilled]
    after = queue.page_after()
    page = [r for r in rows if r.key > after][:500]
    fx = queue.paged(page, 500, 3.0)
    assert [i.id for i in fx.deliver] == ["2", "3", "4"]
    assert not queue.spilled


def test_new_mail_while_spilled_goes_to_the_store_behind_the_spill() -> None:
    queue = q(bound=1)
    queue.incoming("a", "0", "", 1.0)
    fx = queue.incoming("a", "1", "", 1.0)
    assert fx.store and queue.spilled
    fx = queue.incoming("a", "2", "", 1.0)
    assert [i.id for i in fx.store] == ["2"]


def test_failed_spill_write_keeps_its_key_and_a_retry_is_not_a_second_message() -> None:
    # A commit whose answer was lost must not turn into two messages (outage test).
    queue = q(bound=1)
    queue.incoming("a", "0", "", 1.0)
    item = queue.incoming("a", "1", "", 2.0).store[0]
    assert queue.store_failed([item]) == [item]  # the sender hears `unavailable` once
    assert queue.store_failed([item]) == []
    retry = queue.incoming("a", "1", "", 3.0)
    assert not retry.store and not retry.accepted  # still owed under its first key
    fx = queue.stored([item], 4.0)
    assert fx.accepted == {"a": ["1"]}
    assert queue.incoming("a", "1", "", 5.0).accepted == {"a": ["1"]}


def test_refuses_new_mail_when_the_spill_backlog_is_full() -> None:
    queue = q(bound=1, backlog=2)
    queue.incoming("a", "0", "", 1.0)
    assert queue.incoming("a", "1", "", 1.0).store
    assert queue.incoming("a", "2", "", 1.0).store
    fx = queue.incoming("a", "3", "", 1.0)
    assert fx.refused and not fx.store
    assert ("a", "3") not in queue.seen  # refused: a retry is a new message


def test_acking_unknown_or_foreign_mids_does_nothing() -> None:
    queue = q()
    queue.attach(0.0)
    queue.incoming("a", "0", "", 1.0)
    fx = queue.ack(["123", "not-a-number"], 2.0)
    assert not fx.accepted and not fx.delivered and len(queue.items) == 1


def test_read_receipt_after_ack() -> None:
    queue = q()
    queue.attach(0.0)
    item = queue.incoming("a", "0", "", 1.0).deliver[0]
    queue.ack([item.mid], 2.0)
    assert queue.read([item.mid]).read == {"a": ["0"]}


@settings(max_examples=int(os.environ.get("QUEUE_EXAMPLES", "300")), deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("send"), st.sampled_from(["a", "b"]), st.integers(0, 30)),
            st.tuples(st.just("ack"), st.integers(0, 5)),
            st.tuples(st.just("attach")),
            st.tuples(st.just("detach")),
            st.tuples(st.just("commit")),
        ),
        max_size=60,
    )
)
def test_per_sender_order_and_no_duplicates(ops) -> None:
    """Whatever happens, each sender's messages reach the client in send order, each once
    after dedupe by mid, and an accepted message is never forgotten."""
    queue = q(bound=4, window=3)
    store: dict[int, MailRow] = {}
    writing: list = []
    seen_by_client: list = []
    acked: set[str] = set()
    accepted: set[tuple[str, str]] = set()
    sent_order: dict[str, list[str]] = {"a": [], "b": []}
    now = 1.0

    def run(fx) -> None:
        for sender, ids in fx.accepted.items():
            accepted.update((sender, i) for i in ids)
        seen_by_client.extend(fx.deliver)
        writing.extend(fx.store)
        if fx.write_behind is not None:
            for _, key in fx.write_behind.delete_mail:
                store.pop(key, None)
        if fx.page_in:
            after = queue.page_after()
            page = sorted((r for k, r in store.items() if k > after), key=lambda r: r.key)[:2]
            run(queue.paged(page, 2, now))

    for op in ops:
        now += 1.0
        if op[0] == "send":
            cid = f"{op[1]}{op[2]}"
            if cid not in sent_order[op[1]]:
                sent_order[op[1]].append(cid)
            run(queue.incoming(op[1], cid, "", now))
        elif op[0] == "ack":
            unacked = [i.mid for i in seen_by_client if i.mid not in acked]
            mids = unacked[: op[1]]
            acked.update(mids)
            run(queue.ack(mids, now))
        elif op[0] == "attach":
            run(queue.attach(now))
        elif op[0] == "detach":
            run(queue.detach())
        elif op[0] == "commit" and writing:
            batch = list({i.key: i for i in writing}.values())
            writing.clear()
            for item in batch:
                store[item.key] = item.row("bob")
            run(queue.stored(batch, now))
    # Drain: attach, commit, ack everything until nothing is left.
    run(queue.attach(now))
    for _ in range(200):
        if writing:
            batch = list({i.key: i for i in writing}.values())
            writing.clear()
            for item in batch:
                store[item.key] = item.row("bob")
            run(queue.stored(batch, now))
        unacked = [i.mid for i in seen_by_client if i.mid not in acked]
        if not unacked and not writing and not queue.items and not queue.spilled:
            break
        acked.update(unacked)
        run(queue.ack(unacked, now))
    unique = list(dict.fromkeys((i.mid, i.sender, i.id) for i in seen_by_client))
    ids = [(s, i) for _, s, i in unique]
    assert len(ids) == len(set(ids)), "a message reached the client under two mids"
    for sender, order in sent_order.items():
        got = [i for s, i in ids if s == sender]
        assert got == [c for c in order if c in got], "per-sender order broken"
    for sender, cid in accepted:
        assert (sender, cid) in ids, "an accepted message never reached the client"


def test_fill_from_the_back_sends_the_unsent_tail_in_order() -> None:
    """With most of the window in flight, the unsent items are found from the back of the
    queue (``_fill``); they must still go out oldest first, and only once."""
    queue = q(window=10)
    queue.attach(0.0)
    first = [queue.incoming("a", f"a{i}", "x", 1.0).deliver[0] for i in range(6)]
    queue.ack([first[0].mid], 2.0)  # 5 in flight
    later = queue.attach(3.0).deliver  # a reconnect: all 5 again, from the front
    assert [i.id for i in later] == ["a1", "a2", "a3", "a4", "a5"]
    for i in range(6, 12):
        queue.incoming("b", f"b{i}", "x", 4.0)  # 5 of them fill the window, 1 waits
    assert queue.in_flight == 10
    fx = queue.ack([first[1].mid, first[2].mid], 5.0)  # room for 2, 1 unsent in the queue
    assert [i.id for i in fx.deliver] == ["b11"]
    queue.incoming("b", "b12", "x", 6.0)
    queue.incoming("b", "b13", "x", 6.0)  # in flight 10 again, b13 waits
    fx = queue.ack([first[3].mid], 7.0)
    assert [i.id for i in fx.deliver] == ["b13"]
    assert queue.in_flight == 10 and len(queue.items) == 10


def test_an_idle_queue_holds_no_mappings_of_its_own() -> None:
    # Memory per idle user: the five mappings start as one shared empty one, made on first
    # write; writing to the shared one is refused, so no queue can leak into another.
    from actorchat.node._queue import EMPTY

    queue, other = q(), q()
    names = ("items", "spilling", "seen", "recent", "to_store")
    assert all(getattr(queue, n) is EMPTY for n in names)
    queue.attach(now=1.0)
    fx = queue.incoming("alice", "m1", "hi", 2.0)
    queue.ack([fx.deliver[0].mid], 3.0)
    queue.owe(fx.deliver[0])
    assert all(getattr(queue, n) is not EMPTY for n in ("items", "seen", "recent", "to_store"))
    assert all(getattr(other, n) is EMPTY and not getattr(other, n) for n in names)
    try:
        EMPTY[1] = None
    except TypeError:
        pass
    else:
        raise AssertionError("EMPTY took a write")
    assert not EMPTY
