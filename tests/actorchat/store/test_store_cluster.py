"""The cluster's store methods (issue 6), each on SQLite and on PostgreSQL: leases judged by
the database's clock, atomic claims, hand-over, and the relay."""

from __future__ import annotations

import asyncio

from actorchat.store import Store

LEASE = 30.0


def clean(db) -> None:
    """The PostgreSQL schema is shared by the session's store tests: start from no rows."""
    db.run(lambda store: asyncio.sleep(0))  # opening the store migrates it
    db.sql("DELETE FROM cluster_nodes", "DELETE FROM cluster_owners", "DELETE FROM cluster_relay")


def test_join_renew_leave_and_a_second_incarnation_waits(db) -> None:
    async def body(store: Store) -> None:
        assert await store.cluster_join("n1", 1, "ws://a", "p", LEASE) is None
        left = await store.cluster_join("n1", 2, "ws://a", "p", LEASE)  # same name, live lease
        assert left is not None and 0 < left <= LEASE
        ok, now, rows = await store.cluster_renew("n1", 1, LEASE, 7)
        assert ok and rows == [("n1", 1, "ws://a", "p", rows[0][4], rows[0][5], 7)]
        assert rows[0][5] > now
        assert (await store.cluster_renew("n1", 2, LEASE, 0))[0] is False  # not its lease
        await store.cluster_leave("n1", 1)
        assert (await store.cluster_renew("n1", 1, LEASE, 0))[0] is False  # lapsed: fence
        assert await store.cluster_join("n1", 2, "ws://b", "p", LEASE) is None

    clean(db)
    db.run(body)


def test_claims_are_atomic_and_respect_live_owners(db) -> None:
    async def body(store: Store) -> None:
        await store.cluster_join("n1", 1, "ws://a", "p", LEASE)
        await store.cluster_join("n2", 5, "ws://b", "p", LEASE)
        assert await store.cluster_owner("bob") is None
        # two nodes claim at once: exactly one wins, both see the winner
        first, second = await asyncio.gather(
            store.cluster_claim("bob", "n1", 1), store.cluster_claim("bob", "n2", 5)
        )
        assert first == second and first in (("n1", 1), ("n2", 5))
        winner = first
        assert await store.cluster_owner("bob") == (*winner, True)
        other = ("n2", 5) if winner == ("n1", 1) else ("n1", 1)
        assert await store.cluster_claim("bob", *other) == winner  # the owner is alive
        # the owner hands over; then the new owner's claims hold it
        assert await store.cluster_transfer("bob", winner, other) is True
        assert await store.cluster_transfer("bob", winner, other) is False  # not its any more
        assert await store.cluster_claim("bob", *other) == other
        # the owner's lease ends: anyone may claim
        await store.cluster_leave(*other)
        assert await store.cluster_owner("bob") == (*other, False)
        assert await store.cluster_claim("bob", *winner) == winner
        # a new incarnation of a node (once the old lease ended) takes what its former self held
        await store.cluster_leave("n1", 1)
        assert await store.cluster_join("n1", 10, "ws://a", "p", LEASE) is None
        many = await store.cluster_claim_many(["bob", "cat", "dan"], "n1", 10)
        assert many == {"bob": ("n1", 10), "cat": ("n1", 10), "dan": ("n1", 10)}
        _now, rows, owned = await store.cluster_status()
        assert owned == {"n1": 3} and [r[0] for r in rows] == ["n1", "n2"]

    clean(db)
    db.run(body)


def test_relay_rows_go_to_the_live_owner_in_order_and_orphans_are_named(db) -> None:
    async def body(store: Store) -> None:
        await store.cluster_join("n1", 1, "ws://a", "p", LEASE)
        await store.cluster_join("n2", 2, "ws://b", "p", LEASE)
        await store.cluster_claim("bob", "n2", 2)
        rows = [("n1", "bob", "ann", f"id{i}", f"m{i}", 1.0, None, None) for i in range(5)]
        rows.append(("n1", "zed", "ann", "z1", "hi", 1.0, None, None))  # nobody owns zed
        await store.cluster_relay_put(rows)
        assert await store.cluster_relay_waiting("n1") == {"bob", "zed"}
        mine, orphans = await store.cluster_relay_fetch("n2", 2, 100)
        assert [r[3] for r in mine] == [f"id{i}" for i in range(5)] and orphans == ["zed"]
        assert (await store.cluster_relay_fetch("n1", 1, 100))[0] == []  # not n1's users
        await store.cluster_relay_delete([r[0] for r in mine])
        assert await store.cluster_relay_waiting("n1") == {"zed"}

    clean(db)
    db.run(body)
