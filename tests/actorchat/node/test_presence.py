"""``PresenceBook``: the pure presence decisions, driven with explicit times (no sockets, no
tasks). ``now`` is the monotonic clock of the grace deadlines, ``wall`` the last-seen clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorchat.node._presence import (
    OFFLINE,
    ONLINE,
    LocalChange,
    Notice,
    PresenceBook,
    TooManySubscriptions,
)

GRACE = 5.0


def book(**kw) -> PresenceBook:
    return PresenceBook(GRACE, **kw)


def test_first_connection_is_online_and_tells_subscribers_and_the_store() -> None:
    b = book()
    b.subscribe("w1", ["ann"])
    out = b.connected("ann", "c1", wall=100.0)
    assert out.notices == [Notice("ann", ONLINE, 100.0, ("w1",))]
    assert out.local == [LocalChange("ann", ONLINE, 100.0)]
    assert b.status("ann") == (ONLINE, 100.0)


def test_offline_only_after_the_grace_last_seen_when_the_connection_closed() -> None:
    b = book()
    b.subscribe("w1", ["ann"])
    b.connected("ann", "c1", wall=100.0)
    assert b.disconnected("c1", now=10.0, wall=130.0) == 10.0 + GRACE
    assert b.status("ann") == (ONLINE, 100.0)  # within the grace: still online
    assert b.next_deadline() == 15.0
    assert not b.expire(14.999)
    out = b.expire(15.0)
    assert out.notices == [Notice("ann", OFFLINE, 130.0, ("w1",))]
    assert out.local == [LocalChange("ann", OFFLINE, 130.0)]
    assert b.status("ann") == (OFFLINE, 130.0)
    assert b.next_deadline() is None


def test_quick_reconnect_within_the_grace_does_not_flap() -> None:
    b = book()
    b.subscribe("w1", ["ann"])
    b.connected("ann", "c1", wall=100.0)
    b.disconnected("c1", now=10.0, wall=130.0)
    out = b.connected("ann", "c2", wall=131.0)
    assert not out  # nothing to tell, nothing to store
    assert b.next_deadline() is None
    assert not b.expire(100.0)
    assert b.status("ann") == (ONLINE, 100.0)  # one continuous session


def test_takeover_by_a_second_connection_does_not_flap() -> None:
    b = book()
    b.subscribe("w1", ["ann"])
    b.connected("ann", "c1", wall=100.0)
    assert not b.connected("ann", "c2", wall=110.0)
    assert b.disconnected("c1", now=20.0, wall=111.0) is None  # c2 is still here
    assert not b.expire(1000.0)
    assert b.status("ann") == (ONLINE, 100.0)


def test_connected_and_disconnected_are_idempotent() -> None:
    b = book()
    b.connected("ann", "c1", wall=1.0)
    assert not b.connected("ann", "c1", wall=2.0)
    assert b.disconnected("c1", now=0.0, wall=3.0) == GRACE
    assert b.disconnected("c1", now=1.0, wall=4.0) is None
    assert b.expire(GRACE).local == [LocalChange("ann", OFFLINE, 3.0)]
    b.connected("bob", "c2", wall=5.0)
    with pytest.raises(ValueError):  # a connection belongs to one user at a time
        b.connected("cat", "c2", wall=5.0)


def test_three_devices_stay_online_until_the_last_one_closes() -> None:
    # The book counts a user's connections (no set per user): idempotent both ways still.
    b = book()
    for c in ("c1", "c2", "c3"):
        b.connected("ann", c, wall=1.0)
    b.connected("ann", "c2", wall=2.0)
    assert b.disconnected("c2", now=0.0, wall=3.0) is None
    assert b.disconnected("c2", now=0.0, wall=3.0) is None
    assert b.disconnected("c3", now=0.0, wall=3.0) is None
    assert b.online_here("ann") and b.users_here() == [("ann", 1.0)]
    assert b.disconnected("c1", now=0.0, wall=4.0) == GRACE
    assert b.expire(GRACE).local == [LocalChange("ann", OFFLINE, 4.0)]
    assert not b.online_here("ann")


def test_subscribers_are_told_only_while_subscribed() -> None:
    b = book()
    b.subscribe("w1", ["ann", "bob"])
    b.subscribe("w2", ["ann"])
    out = b.connected("ann", "c1", wall=1.0)
    assert set(out.notices[0].to) == {"w1", "w2"}
    b.unsubscribe("w2", ["ann", "never-subscribed"])
    b.disconnected("c1", now=0.0, wall=2.0)
    assert b.expire(GRACE).notices[0].to == ("w1",)
    b.drop("w1")
    assert b.connected("ann", "c2", wall=3.0).notices[0].to == ()
    assert b.watchers("ann") == frozenset() and b.subscriptions("w1") == frozenset()


def test_subscriptions_are_capped_all_or_nothing() -> None:
    b = book(max_subscriptions=3)
    assert b.subscribe("w", ["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(TooManySubscriptions):
        b.subscribe("w", ["c", "d"])
    assert b.subscriptions("w") == {"a", "b"}
    assert b.subscribe("w", ["a", "c"]) == ["c"]  # already watched ones do not count twice


def test_last_seen_of_recent_offline_users_is_kept_in_memory_bounded() -> None:
    b = book(recent_limit=2)
    for i, user in enumerate(["ann", "bob", "cat"]):
        b.connected(user, user, wall=1.0)
        b.disconnected(user, now=float(i), wall=10.0 + i)
    b.expire(100.0)
    # the store has them all; memory keeps the latest few (a subscribe racing the
    # write-behind of a last-seen time still answers it)
    assert [b.status(u) for u in ("ann", "bob", "cat")] == [
        (OFFLINE, None), (OFFLINE, 11.0), (OFFLINE, 12.0)
    ]
    b.connected("bob", "c", wall=20.0)
    assert b.status("bob") == (ONLINE, 20.0)


def test_peer_node_reports_are_one_more_source() -> None:
    b = book()
    b.subscribe("w", ["ann"])
    out = b.remote("n2", "ann", ONLINE, 50.0)
    assert out.notices == [Notice("ann", ONLINE, 50.0, ("w",))] and out.local == []
    # ann also connects here: still online, but this node's change is stored and announced
    out = b.connected("ann", "c1", wall=60.0)
    assert out.notices == [] and out.local == [LocalChange("ann", ONLINE, 60.0)]
    b.disconnected("c1", now=0.0, wall=70.0)
    out = b.expire(GRACE)
    assert out.notices == [] and out.local == [LocalChange("ann", OFFLINE, 70.0)]
    assert b.remote("n2", "ann", OFFLINE, 80.0).notices == [Notice("ann", OFFLINE, 80.0, ("w",))]
    b.remote("n3", "ann", ONLINE, 90.0)
    assert b.node_gone("n3", wall=95.0).notices == [Notice("ann", OFFLINE, 95.0, ("w",))]
    assert not b.node_gone("n3", wall=96.0)


def test_last_seen_rows_at_stop() -> None:
    b = book()
    b.connected("ann", "c1", wall=1.0)
    b.connected("bob", "c2", wall=1.0)
    b.disconnected("c2", now=0.0, wall=7.0)
    assert sorted(b.last_seen_rows(wall=9.0)) == [("ann", 9.0), ("bob", 7.0)]
    assert sorted(u for u, _ in b.users_here()) == ["ann", "bob"]


# -- a property: the book agrees with a simple model ---------------------------------------------
OPS = st.lists(
    st.tuples(
        st.sampled_from(["connect", "disconnect", "advance"]),
        st.sampled_from(["ann", "bob"]),
        st.integers(0, 3),  # connection number
        st.floats(0.0, 8.0),  # time to advance
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_notices_alternate_and_match_a_model(ops) -> None:
    """Subscribers see online/offline strictly alternating per user; a user is reported
    offline only after a full grace with no connection, and online iff it has one."""
    b = book()
    b.subscribe("w", ["ann", "bob"])
    now = 0.0
    owner: dict[int, str] = {}
    last: dict[str, str] = {}
    closed_at: dict[str, float] = {}
    seen = []

    def take(out) -> None:
        for n in out.notices:
            assert last.get(n.user, OFFLINE) != n.status, (n, last)
            last[n.user] = n.status
            seen.append(n)

    for op, user, c, dt in ops:
        if op == "connect" and c not in owner:
            owner[c] = user
            take(b.connected(user, c, wall=now))
            closed_at.pop(user, None)
        elif op == "disconnect" and c in owner:
            u = owner.pop(c)
            b.disconnected(c, now=now, wall=now)
            if u not in owner.values():
                closed_at[u] = now
        elif op == "advance":
            now += dt
            out = b.expire(now)
            for n in out.notices:
                # The deadline as the book computes it (closed + grace), not now - closed:
                # the two differ by a rounding step.
                assert n.status == OFFLINE and now >= closed_at[n.user] + GRACE
                assert n.last_seen == closed_at[n.user]
            take(out)
        for u in ("ann", "bob"):
            expected = u in owner.values() or (u in closed_at and now < closed_at[u] + GRACE)
            assert b.is_online(u) == expected == (last.get(u) == ONLINE)
