"""Membership, trust, routing and the lease's own validity: pure (``_lease.py``)."""

from __future__ import annotations

from actorchat.cluster._lease import (
    SAFETY,
    Route,
    member_proof,
    renew_every,
    route,
    valid_until,
    view,
)

SECRET = b"s" * 32


def row(name: str, inc: int, expires: float, *, secret: bytes = SECRET) -> tuple:
    address = f"ws://{name}/cluster/link"
    return (name, inc, address, member_proof(secret, name, inc, address), 0.0, expires, 3)


def test_view_sorts_members_into_live_down_and_untrusted_and_leaves_us_out() -> None:
    rows = [
        row("me", 1, 200.0),
        row("a", 2, 101.0),
        row("b", 3, 99.0),
        row("c", 4, 100.0),  # expires exactly now: down
        row("rogue", 5, 500.0, secret=b"other" * 8),
    ]
    seen = view(rows, 100.0, SECRET, "me")
    assert set(seen.live) == {"a"} and seen.live["a"].incarnation == 2
    assert seen.down == {"b", "c"}
    assert seen.untrusted == {"rogue"}


def test_a_proof_binds_name_incarnation_and_address() -> None:
    good = row("a", 2, 200.0)
    for i, value in ((0, "b"), (1, 3), (2, "ws://elsewhere/")):
        forged = list(good)
        forged[i] = value
        assert "a" not in view([tuple(forged)], 100.0, SECRET, "me").live


def test_own_lease_ends_before_anyone_else_can_see_it_lapse() -> None:
    # The database dates a renewal no earlier than it was sent: others see it lapse at
    # (sent + lease) at the earliest; we stop acting at sent + lease * SAFETY.
    assert valid_until(10.0, 4.0) == 10.0 + 4.0 * SAFETY < 14.0
    assert renew_every(4.0) == 1.0
    # at least two renewals fit in the time we may act on one
    assert renew_every(4.0) * 2 < 4.0 * SAFETY


def test_route() -> None:
    me = ("me", 5)
    live = {"a": 1, "b": 2}
    assert route(None, me, live, ["a"]) == (Route.LOCAL, None)  # never owned: claim it
    assert route(("me", 5), me, live, ["a"]) == (Route.LOCAL, None)
    assert route(("me", 4), me, live, ["a"]) == (Route.LOCAL, None)  # our former self
    assert route(("a", 1), me, live, ["a"]) == (Route.REMOTE, "a")
    assert route(("b", 2), me, live, ["a"]) == (Route.UNREACHABLE, "b")  # no link: relay
    assert route(("a", 0), me, live, ["a"]) == (Route.LOCAL, None)  # a's old incarnation
    assert route(("gone", 1), me, live, ["a"]) == (Route.LOCAL, None)  # owner is down


def test_the_cluster_command_table() -> None:
    from actorchat.cluster._cli import render

    rows = [row("n1", 1, 105.0), row("n2", 2, 90.0), row("n3", 3, 0.0),
            row("x", 4, 200.0, secret=b"other" * 8)]
    table = render(100.0, rows, {"n1": 7, "n2": 4}, SECRET).splitlines()
    assert [line.split()[:5] for line in table[1:]] == [
        ["n1", "up", "5.0s", "3", "7"],
        ["n2", "down", "-", "0", "0"],
        ["n3", "left", "-", "0", "0"],
        ["x", "untrusted", "100.0s", "0", "0"],
    ]
    assert "no members" in render(0.0, [], {}, None)
