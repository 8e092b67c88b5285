"""``Store`` behaviour, each test on SQLite and on PostgreSQL (the ``db`` fixture)."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import text

from actorchat.store import (
    DedupeRow,
    MailRow,
    Store,
    StoreBatch,
    StoreClosed,
    StoreUnavailable,
    create_engine,
)


def mail(recipient: str, key: int, body: str = "hi", sender: str = "ann") -> MailRow:
    return MailRow(recipient, key, sender, f"{sender}-{key}", body, 1000.0 + key)


def test_users(db) -> None:
    async def body(store: Store) -> None:
        assert await store.create_user("ann", "hash-a", 1.0) is True
        assert await store.create_user("ann", "other", 2.0) is False
        assert await store.create_user("bob", "hash-b", 3.0) is True
        assert await store.get_password_hash("ann") == "hash-a"
        assert await store.get_password_hash("nobody") is None
        assert await store.users_exist(["ann", "bob", "cat", "ann"]) == {"ann", "bob"}
        assert await store.users_exist([]) == set()
        with pytest.raises(ValueError):
            await store.create_user("x" * 65, "h", 1.0)

    db.run(body)


def test_users_exist_past_one_in_list(db) -> None:
    async def body(store: Store) -> None:
        for i in range(0, 1200, 7):
            await store.create_user(f"u{i}", "h", 0.0)
        asked = [f"u{i}" for i in range(1200)]
        assert await store.users_exist(asked) == {f"u{i}" for i in range(0, 1200, 7)}

    db.run(body)


def test_fetch_pages_in_key_order(db) -> None:
    keys = random.Random(1).sample(range(10_000), 95)

    async def body(store: Store) -> None:
        await store.apply(StoreBatch(put_mail=[mail("bob", k) for k in keys]))
        await store.apply(StoreBatch(put_mail=[mail("cat", k) for k in range(5)]))
        pages, after = [], None
        while page := await store.fetch_mail("bob", after, 10):
            assert len(page) <= 10
            pages.append(page)
            after = page[-1].key
        assert [len(p) for p in pages] == [10] * 9 + [5]
        assert [m.key for p in pages for m in p] == sorted(keys)
        assert all(m.recipient == "bob" for p in pages for m in p)
        assert await store.fetch_mail("nobody", None, 10) == []
        with pytest.raises(ValueError):
            await store.fetch_mail("bob", None, 0)

    db.run(body)


def test_rows_round_trip_exactly(db) -> None:
    rows = [
        MailRow("bob", -(2**63), "ann", "c" * 128, "", 0.1, None, None),
        MailRow("bob", 2**63 - 1, "a" * 64, "id", "h\u00e9llo \U0001f600\n" * 100,
                1.7e9 + 0.123456789, "family", '{"sha256": "ab", "size": 3}'),
    ]

    async def body(store: Store) -> None:
        await store.apply(StoreBatch(put_mail=rows))
        assert await store.fetch_mail("bob", None, 10) == rows

    db.run(body)


def test_put_is_idempotent_and_first_write_wins(db) -> None:
    async def body(store: Store) -> None:
        batch = StoreBatch(put_mail=[mail("bob", 1), mail("bob", 2)])
        await store.apply(batch)
        await store.apply(batch)  # a retry after StoreUnavailable
        await store.apply(StoreBatch(put_mail=[mail("bob", 2, body="changed"), mail("bob", 3)]))
        got = await store.fetch_mail("bob", None, 10)
        assert [(m.key, m.body) for m in got] == [(1, "hi"), (2, "hi"), (3, "hi")]

    db.run(body)


def test_delete(db) -> None:
    async def body(store: Store) -> None:
        await store.apply(StoreBatch(put_mail=[mail("bob", k) for k in range(5)]))
        result = await store.apply(StoreBatch(delete_mail=[("bob", 1), ("bob", 3), ("bob", 99)]))
        assert result.mail_deleted == 3
        assert [m.key for m in await store.fetch_mail("bob", None, 10)] == [0, 2, 4]
        # Stored and acknowledged within one batch: puts run first, so it ends deleted.
        await store.apply(StoreBatch(put_mail=[mail("bob", 7)], delete_mail=[("bob", 7)]))
        assert [m.key for m in await store.fetch_mail("bob", None, 10)] == [0, 2, 4]

    db.run(body)


def test_dedupe_lookup_and_recent(db) -> None:
    rows = [
        DedupeRow("ann", "m1", "bob", 10, 100.0),
        DedupeRow("ann", "m2", "bob", 11, 101.0),
        DedupeRow("ann", "m1", "cat", 5, 102.0),
        DedupeRow("dan", "m3", "bob", 12, 103.0),
    ]

    async def body(store: Store) -> None:
        await store.apply(StoreBatch(put_dedupe=rows))
        await store.apply(StoreBatch(put_dedupe=[DedupeRow("ann", "m1", "bob", 99, 999.0)]))
        assert await store.lookup_dedupe("ann", ["m1", "m2", "m9"], "bob") == {"m1": 10, "m2": 11}
        assert await store.lookup_dedupe("ann", ["m1"], "cat") == {"m1": 5}
        assert await store.lookup_dedupe("ann", [], "bob") == {}
        many = [f"x{i}" for i in range(1100)] + ["m2"]
        assert await store.lookup_dedupe("ann", many, "bob") == {"m2": 11}
        assert await store.recent_dedupe("bob", 2) == [rows[3], rows[1]]
        assert await store.recent_dedupe("bob", 10) == [rows[3], rows[1], rows[0]]
        assert await store.recent_dedupe("nobody", 10) == []

    db.run(body)


def test_max_key_spans_mail_and_dedupe(db) -> None:
    async def body(store: Store) -> None:
        assert await store.max_key("bob") is None
        await store.apply(StoreBatch(put_mail=[mail("bob", 3), mail("bob", 8), mail("cat", 50)]))
        assert await store.max_key("bob") == 8
        await store.apply(StoreBatch(put_dedupe=[DedupeRow("ann", "x", "bob", 20, 1.0)]))
        assert await store.max_key("bob") == 20
        # Delivered and deleted: the dedupe entry still remembers the key was used.
        await store.apply(StoreBatch(delete_mail=[("bob", 3), ("bob", 8)]))
        assert await store.max_key("bob") == 20
        await store.apply(StoreBatch(put_mail=[mail("bob", 21)]))
        assert await store.max_key("bob") == 21
        assert await store.max_key("cat") == 50

    db.run(body)


def test_load_mailboxes_answers_as_the_reads_one_user_at_a_time(db) -> None:
    """The batched load of many mailboxes (a burst of first logins) gives each user what
    max_key, recent_dedupe and fetch_mail give: users with mail only, dedupe only, both,
    neither, more users than one IN list holds, a user asked twice."""
    dedupes = [DedupeRow("ann", f"d{i}", "bob", 30 + i, 100.0 + i) for i in range(4)]
    dedupes.append(DedupeRow("ann", "d9", "dan", 7, 1.0))

    async def body(store: Store) -> None:
        await store.apply(StoreBatch(
            put_mail=[mail("bob", k) for k in (3, 1, 8)] + [mail("cat", 50)],
            put_dedupe=dedupes,
        ))
        users = ["bob", "cat", "dan", "eve", "bob"] + [f"u{i}" for i in range(600)]
        loaded = await store.load_mailboxes(users, 3, 2)
        assert set(loaded) == set(users)
        for user in set(users):
            assert loaded[user] == (
                await store.max_key(user),
                await store.recent_dedupe(user, 3),
                await store.fetch_mail(user, None, 2),
            ), user
        assert loaded["bob"][0] == 33 and [m.key for m in loaded["bob"][2]] == [1, 3]
        assert loaded["dan"] == (7, [dedupes[4]], [])
        assert loaded["eve"] == (None, [], [])
        assert await store.load_mailboxes([], 3, 2) == {}
        with pytest.raises(ValueError):
            await store.load_mailboxes(["bob"], 3, 0)

    db.run(body)


def test_prune_dedupe_by_age_in_bounded_steps(db) -> None:
    old = [DedupeRow("ann", f"o{i}", "bob", i, 100.0 + i) for i in range(25)]
    new = [DedupeRow("ann", f"n{i}", "bob", 100 + i, 500.0) for i in range(3)]

    async def body(store: Store) -> None:
        await store.apply(StoreBatch(put_dedupe=old + new))
        assert await store.prune_dedupe(110.0, limit=4) == 4
        assert await store.prune_dedupe(110.0, limit=4) == 4
        assert await store.prune_dedupe(110.0, limit=4) == 2
        assert await store.prune_dedupe(110.0) == 0
        assert await store.prune_dedupe(400.0) == 15
        assert await store.recent_dedupe("bob", 100) == new[::-1]

    db.run(body)


def test_last_seen_keeps_the_latest_time(db) -> None:
    async def body(store: Store) -> None:
        result = await store.apply(StoreBatch(last_seen=[("ann", 5.0), ("ann", 7.0), ("bob", 1.0)]))
        assert result.last_seen == 2
        await store.apply(StoreBatch(last_seen=[("ann", 6.0), ("bob", 2.0)]))

    db.run(body)
    assert sorted(db.sql("SELECT name, ts FROM last_seen")[0]) == [("ann", 7.0), ("bob", 2.0)]


def test_presence_of_gives_existing_users_with_their_last_seen(db) -> None:
    async def body(store: Store) -> None:
        for name in ("ann", "bob"):
            await store.create_user(name, "h", 1.0)
        await store.apply(StoreBatch(last_seen=[("ann", 5.0)]))
        assert await store.presence_of(["ann", "bob", "ghost", "ann"]) == {"ann": 5.0, "bob": None}
        assert await store.presence_of([]) == {}

    db.run(body)


def test_large_mailbox_drains_by_paging(db) -> None:
    total, page_size = 20_000, 1000

    async def body(store: Store) -> None:
        for start in range(0, total, 5000):
            await store.apply(StoreBatch(put_mail=[mail("bob", k) for k in
                                                   range(start, start + 5000)]))
        seen, after = 0, None
        while page := await store.fetch_mail("bob", after, page_size):
            assert page[0].key == seen and len(page) <= page_size
            await store.apply(StoreBatch(delete_mail=[("bob", m.key) for m in page]))
            seen += len(page)
            after = page[-1].key
        assert seen == total and await store.fetch_mail("bob", None, 1) == []

    db.run(body)


def test_empty_batch_touches_nothing(db) -> None:
    async def body(store: Store) -> None:
        result = await store.apply(StoreBatch())
        assert (result.mail_put, result.mail_deleted, result.dedupe_put) == (0, 0, 0)

    db.run(body)


def test_ping_and_close(db) -> None:
    async def body(store: Store) -> None:
        await store.ping()
        await store.close()
        with pytest.raises(StoreClosed):
            await store.ping()
        with pytest.raises(StoreClosed):
            await store.apply(StoreBatch(put_mail=[mail("bob", 1)]))

    db.run(body)


def _unreachable_url(db) -> str:
    if db.dialect == "sqlite":
        return "sqlite:////nonexistent-dir/for/sure/store.db"
    return "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@pytest.mark.parametrize("migrate", [True, False])
def test_unreachable_database_is_unavailable(db, migrate) -> None:
    async def main() -> None:
        await Store.open(_unreachable_url(db), statement_timeout=2.0, migrate=migrate)

    with pytest.raises(StoreUnavailable):
        asyncio.run(main())


def test_write_blocked_by_a_lock_times_out_as_unavailable(db) -> None:
    # Another writer holds the lock longer than the store's statement timeout.
    lock = "BEGIN IMMEDIATE" if db.dialect == "sqlite" else "LOCK TABLE mail IN EXCLUSIVE MODE"

    async def main() -> None:
        store = await Store.open(db.url, schema=db.schema, statement_timeout=0.3)
        other = create_engine(db.url, schema=db.schema, pooled=False)
        try:
            async with other.connect() as holder:
                await holder.exec_driver_sql(lock)
                with pytest.raises(StoreUnavailable):
                    await store.apply(StoreBatch(put_mail=[mail("bob", 1)]))
                await holder.rollback()
            await store.apply(StoreBatch(put_mail=[mail("bob", 1)]))  # the store recovered
            assert len(await store.fetch_mail("bob", None, 10)) == 1
        finally:
            await other.dispose()
            await store.close()

    asyncio.run(main())


def test_lost_connection_is_unavailable_once_then_recovers(db) -> None:
    if db.dialect == "sqlite":
        pytest.skip("SQLite has no server connection to lose")

    async def body(store: Store) -> None:
        await store.ping()
        # Reaching into the pool: only this store's own backend may be killed, because
        # other test runs may share the server.
        async with store._engine.connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
        killer = create_engine(db.url, pooled=False)
        try:
            async with killer.connect() as connection:
                await connection.scalar(text(f"SELECT pg_terminate_backend({int(pid)})"))
        finally:
            await killer.dispose()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        await store.ping()

    db.run(body)



def test_sqlite_apply_writes_without_a_round_trip_to_aiosqlite(db, monkeypatch) -> None:
    """On SQLite a group commit is written in the store's own thread (``_direct.py``): each
    aiosqlite call is a round trip between two threads, and an ``apply`` made five of them
    (~0.8 ms of CPU whatever its rows). What it writes is read back through the pool."""
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL's apply goes through asyncpg")
    import aiosqlite.core

    calls: list[str] = []
    execute = aiosqlite.core.Connection._execute

    async def counted(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await execute(self, fn, *args, **kwargs)

    async def body(store: Store) -> None:
        monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
        await store.apply(StoreBatch(
            put_mail=[mail("bob", 1), mail("bob", 2)],
            put_dedupe=[DedupeRow("ann", "ann-0", "bob", 0, 1.0)],
            last_seen=[("bob", 5.0)],
        ))
        await store.apply(StoreBatch(delete_mail=[("bob", 1)], last_seen=[("bob", 4.0)]))
        assert calls == []
        assert [m.key for m in await store.fetch_mail("bob", None, 10)] == [2]
        assert await store.max_key("bob") == 2
        assert calls  # the reads went through the pool (aiosqlite) as before

    db.run(body)
