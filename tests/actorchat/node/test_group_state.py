"""The pure rules of groups (``_group_state.py``) and the group side of a mailbox's queue
(``_queue.py``): without sockets, tasks or clocks; Hypothesis for the fan-out bookkeeping."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorchat.node import DeliveryQueue
from actorchat.node._group_state import (
    MAX_MEMBERS,
    FanOut,
    GroupInfo,
    GroupRefused,
    Posted,
    apply_change,
    check_member,
    plan_add,
    plan_create,
    plan_leave,
    plan_remove,
)
from actorchat.protocol import ErrorCode


def info(*members: str, owner: str = "alice") -> GroupInfo:
    return GroupInfo("g1", "friends", owner, list(members))


def code_of(call, *args) -> ErrorCode:
    with pytest.raises(GroupRefused) as caught:
        call(*args)
    return caught.value.code


# -- membership ----------------------------------------------------------------------------
def test_create_puts_the_creator_first_without_repeats_and_caps_the_size() -> None:
    assert plan_create("alice", ["bob", "alice", "bob", "carol"]) == ["alice", "bob", "carol"]
    assert plan_create("alice", []) == ["alice"]
    many = [f"u{i}" for i in range(MAX_MEMBERS - 1)]
    assert len(plan_create("alice", many)) == MAX_MEMBERS == 1024
    assert code_of(plan_create, "alice", [*many, "one-more"]) is ErrorCode.NOT_ALLOWED


def test_only_the_owner_adds_and_removes() -> None:
    g = info("alice", "bob")
    assert plan_add(g, "alice", ["carol", "bob", "carol"]) == ["carol"]
    assert code_of(plan_add, g, "bob", ["carol"]) is ErrorCode.NOT_ALLOWED
    assert code_of(plan_add, g, "mallory", ["mallory"]) is ErrorCode.NOT_MEMBER
    assert plan_remove(g, "alice", ["bob", "zed"]) == ["bob"]
    assert code_of(plan_remove, g, "bob", ["alice"]) is ErrorCode.NOT_ALLOWED
    assert code_of(plan_remove, g, "mallory", ["bob"]) is ErrorCode.NOT_MEMBER
    assert code_of(plan_remove, g, "alice", ["alice"]) is ErrorCode.NOT_ALLOWED  # leave instead


def test_add_beyond_the_limit_is_refused() -> None:
    g = info(*["alice"] + [f"u{i}" for i in range(MAX_MEMBERS - 2)])
    assert plan_add(g, "alice", ["x"]) == ["x"]
    assert code_of(plan_add, g, "alice", ["x", "y"]) is ErrorCode.NOT_ALLOWED


def test_leave_passes_ownership_to_the_longest_standing_member() -> None:
    g = info("alice", "bob", "carol")
    assert plan_leave(g, "carol") == "alice"
    assert plan_leave(g, "alice") == "bob"
    assert plan_leave(info("alice"), "alice") is None  # the group is deleted
    assert code_of(plan_leave, g, "zed") is ErrorCode.NOT_MEMBER
    apply_change(g, [], ["alice"], "bob")
    assert (g.members, g.owner) == (["bob", "carol"], "bob")
    apply_change(g, ["dave", "bob"], [], "bob")
    assert g.members == ["bob", "carol", "dave"]
    assert g.frame().members == ["bob", "carol", "dave"]
    check_member(g, "dave")
    assert code_of(check_member, g, "alice") is ErrorCode.NOT_MEMBER


# -- fan-out bookkeeping ---------------------------------------------------------------------
def test_accepted_only_once_every_copy_is_safe() -> None:
    f = FanOut()
    outcome, msg = f.post("alice", "m1", "hi", 1.0, None, ["alice", "bob", "carol"])
    assert outcome is Posted.NEW and msg is not None
    assert msg.recipients == ("bob", "carol") and msg.seq == 1
    assert f.safe("bob", "alice", ["m1"]) == []
    assert f.post("alice", "m1", "hi", 1.0, None, ["alice"])[0] is Posted.PENDING  # retry
    assert f.safe("bob", "alice", ["m1"]) == []  # the same copy again: still waiting
    assert f.safe("carol", "alice", ["m1"]) == ["m1"]
    assert f.idle()
    assert f.post("alice", "m1", "hi", 1.0, None, ["alice", "bob"])[0] is Posted.ACCEPTED
    assert f.safe("carol", "alice", ["m1"]) == []  # late duplicate notice: nothing
    assert f.post("alice", "solo", "hi", 1.0, None, ["alice"])[0] is Posted.ACCEPTED


def test_to_hand_in_sequence_order_and_a_restart_hands_unsafe_copies_again() -> None:
    f = FanOut()
    for i in range(5):
        f.post("alice", f"m{i}", "", 0.0, None, ["alice", "bob"])
    first = f.to_hand(3)
    assert [m.seq for m in first] == [1, 2, 3]
    f.mark_handed(first, now=10.0)
    assert [m.seq for m in f.to_hand(10)] == [4, 5]
    f.safe("bob", "alice", ["m0"])  # seq 1 is safe
    assert f.rehand(now=11.0, after=5.0) == 0
    assert f.rehand(now=15.0, after=5.0) == 2  # m2, m3: handed long ago, still unsafe
    assert [m.seq for m in f.to_hand(10)] == [2, 3, 4, 5]
    f.restarted()
    assert [m.seq for m in f.to_hand(10)] == [2, 3, 4, 5]


def test_backlog_and_memory_are_bounded() -> None:
    f = FanOut(remember=3, backlog=2)
    f.post("a", "1", "", 0.0, None, ["a", "b"])
    assert not f.full()
    f.post("a", "2", "", 0.0, None, ["a", "b"])
    assert f.full()
    for i in range(10):
        f.post("a", f"x{i}", "", 0.0, None, ["a"])  # accepted at once, remembered
    assert len(f.done) == 3


ops = st.lists(
    st.one_of(
        st.tuples(st.just("post"), st.sampled_from("abc"), st.integers(0, 6),
                  st.sets(st.sampled_from("abcde"), min_size=1)),
        st.tuples(st.just("safe"), st.sampled_from("abcde"), st.sampled_from("abc"),
                  st.integers(0, 6)),
        st.tuples(st.just("restart")),
        st.tuples(st.just("hand"), st.integers(1, 4)),
    ),
    max_size=60,
)


@settings(max_examples=int(os.environ.get("GROUP_EXAMPLES", "300")), deadline=None)
@given(ops)
def test_fan_out_accepts_each_message_once_and_only_when_every_copy_is_safe(ops) -> None:
    """Model: a message is accepted exactly when every recipient fixed at its first post has
    reported its copy safe; retries never make a second message; sequence numbers grow; the
    copies still to hand come in sequence order."""
    f = FanOut()
    recipients: dict[tuple[str, str], set[str]] = {}  # first post's recipients
    safe: dict[tuple[str, str], set[str]] = {}
    accepted: list[tuple[str, str]] = []
    seqs: dict[tuple[str, str], int] = {}
    for op in ops:
        if op[0] == "post":
            _, sender, n, members = op
            key = (sender, str(n))
            outcome, msg = f.post(sender, str(n), "", 0.0, None, sorted(members))
            if key not in recipients:
                recipients[key] = set(members) - {sender}
                safe[key] = set()
                assert outcome is (Posted.NEW if recipients[key] else Posted.ACCEPTED)
                assert msg is not None and msg.seq == len(seqs) + 1
                seqs[key] = msg.seq
                if outcome is Posted.ACCEPTED:
                    accepted.append(key)
            else:
                done = key in accepted
                assert outcome is (Posted.ACCEPTED if done else Posted.PENDING)
        elif op[0] == "safe":
            _, member, sender, n = op
            key = (sender, str(n))
            for id in f.safe(member, sender, [str(n)]):
                accepted.append((sender, id))
            if key in recipients and member in recipients[key]:
                safe[key].add(member)
        elif op[0] == "restart":
            f.restarted()
        else:
            batch = f.to_hand(op[1])
            assert [m.seq for m in batch] == sorted(m.seq for m in batch)
            f.mark_handed(batch, 0.0)
        # the invariant: accepted exactly when every copy is safe, and once
        assert len(accepted) == len(set(accepted))
        for key, members in recipients.items():
            assert (key in accepted) == (members <= safe[key])
        assert {(m.sender, m.id) for m in f.pending.values()} == set(recipients) - set(accepted)


# -- the group side of a member's mailbox ----------------------------------------------------
def q() -> DeliveryQueue:
    queue = DeliveryQueue("bob")
    queue.load(None, [], [], 500)
    return queue


def test_a_group_copy_is_reported_to_its_group_and_receipts_carry_the_group() -> None:
    queue = q()
    queue.attach(now=1.0)
    fx = queue.incoming("alice", "m1", "hi", 2.0, group="g1")
    [item] = fx.deliver
    assert item.group == "g1" and not fx.accepted and not fx.group_accepted
    again = queue.incoming("alice", "m1", "hi", 2.1, group="g1")  # handed again: waits
    assert not again.deliver and not again.group_accepted
    fx = queue.ack([item.mid], 3.0)
    assert fx.group_accepted == {("g1", "alice"): ["m1"]} and not fx.accepted
    assert fx.group_delivered == {("g1", "alice"): ["m1"]} and not fx.delivered
    fx = queue.read([item.mid])
    assert fx.group_read == {("g1", "alice"): ["m1"]} and not fx.read
    again = queue.incoming("alice", "m1", "hi", 4.0, group="g1")  # safe: reported again
    assert again.group_accepted == {("g1", "alice"): ["m1"]} and not again.deliver


def test_a_stored_group_copy_is_safe_for_its_group() -> None:
    queue = q()
    fx = queue.incoming("alice", "m1", "hi", 2.0, group="g1")
    assert [i.group for i in fx.store] == ["g1"]
    fx = queue.stored(fx.store, 2.5)
    assert fx.group_accepted == {("g1", "alice"): ["m1"]} and not fx.accepted
