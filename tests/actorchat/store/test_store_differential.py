"""Differential test: one generated sequence of store operations, played on SQLite, on
PostgreSQL and on a few dicts (the model), must give the same answer at every step.

The dialects differ in ways unit tests rarely hit (string comparison, float storage, limits,
ordering, conflict handling); this is where those differences would show. The stores are
opened once and reused across examples (tables are emptied in between) to stay fast.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorchat.store import DedupeRow, MailRow, Store, StoreBatch, create_engine

# Few names, so operations collide; some differ only in ways a collation might ignore.
NAMES = ["ann", "Ann", "ann ", "b\u00f6b", "bo\u0308b", "x" * 64]
CLIENT_IDS = ["m1", "m2", "M1", "\u00e9" * 128]
TABLES = ("users", "mail", "dedupe", "last_seen")

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
names = st.sampled_from(NAMES)
keys = st.integers(0, 12) | st.sampled_from([-(2**63), 2**63 - 1])
times = st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 5).map(float)


@dataclass(frozen=True)
class DedupeSpec:
    """A dedupe put whose key the player assigns (increasing), so no two entries of one
    recipient tie on (created_at, key) and ``recent_dedupe`` has one right answer."""

    sender: str
    client_id: str
    recipient: str
    created_at: float


mail_rows = st.builds(MailRow, names, keys, names, st.sampled_from(CLIENT_IDS), texts, times,
                      st.none() | names, st.none() | texts)
batches = st.tuples(
    st.lists(mail_rows, max_size=6),
    st.lists(st.tuples(names, keys), max_size=4),
    st.lists(st.builds(DedupeSpec, names, st.sampled_from(CLIENT_IDS), names,
                       st.integers(0, 3).map(float)), max_size=4),
    st.lists(st.tuples(names, times), max_size=3),
)
applies = st.tuples(st.just("apply"), batches)
prunes = st.tuples(st.just("prune_dedupe"), st.integers(0, 4).map(float))
operations = st.one_of(
    # Repeated branches weigh the draw: most steps should change something.
    applies, applies, applies, prunes, prunes,
    st.tuples(st.just("fetch_mail"), names, st.none() | keys, st.integers(1, 4)),
    st.tuples(st.just("max_key"), names),
    st.tuples(st.just("recent_dedupe"), names, st.integers(1, 4)),
    st.tuples(st.just("load_mailboxes"), st.lists(names), st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.just("lookup_dedupe"), names, st.lists(st.sampled_from(CLIENT_IDS)), names),
    st.tuples(st.just("create_user"), names, texts),
    st.tuples(st.just("users_exist"), st.lists(names)),
    st.tuples(st.just("last_seen"),),
)


@dataclass
class Model:
    """What the store should answer, in plain dicts."""

    mail: dict[tuple[str, int], MailRow] = field(default_factory=dict)
    dedupe: dict[tuple[str, str, str], DedupeRow] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)

    def apply(self, batch: StoreBatch) -> None:
        for row in batch.put_mail:
            self.mail.setdefault((row.recipient, row.key), row)
        for row in batch.put_dedupe:
            self.dedupe.setdefault((row.sender, row.client_id, row.recipient), row)
        for recipient, key in batch.delete_mail:
            self.mail.pop((recipient, key), None)
        for name, ts in batch.last_seen:
            self.seen[name] = max(ts, self.seen.get(name, ts))

    def fetch_mail(self, recipient: str, after: int | None, limit: int) -> list[MailRow]:
        found = sorted((k, row) for (r, k), row in self.mail.items()
                       if r == recipient and (after is None or k > after))
        return [row for _, row in found[:limit]]

    def max_key(self, recipient: str) -> int | None:
        found = [k for r, k in self.mail if r == recipient]
        found += [row.key for row in self.dedupe.values() if row.recipient == recipient]
        return max(found, default=None)

    def recent_dedupe(self, recipient: str, limit: int) -> list[DedupeRow]:
        rows = [row for row in self.dedupe.values() if row.recipient == recipient]
        return sorted(rows, key=lambda row: (-row.created_at, -row.key))[:limit]

    def load_mailboxes(self, recipients: list[str], dedupe_limit: int, page: int) -> dict:
        return {r: (self.max_key(r), self.recent_dedupe(r, dedupe_limit),
                    self.fetch_mail(r, None, page)) for r in recipients}

    def lookup_dedupe(self, sender: str, client_ids: list[str], recipient: str) -> dict:
        return {c: self.dedupe[sender, c, recipient].key for c in client_ids
                if (sender, c, recipient) in self.dedupe}

    def prune_dedupe(self, older_than: float) -> int:
        old = [pk for pk, row in self.dedupe.items() if row.created_at < older_than]
        for pk in old:
            del self.dedupe[pk]
        return len(old)

    def create_user(self, name: str, password_hash: str) -> bool:
        if name in self.users:
            return False
        self.users[name] = password_hash
        return True

    def users_exist(self, wanted: list[str]) -> set[str]:
        return set(wanted) & set(self.users)


async def _last_seen(engine: Any) -> list[tuple[str, float]]:
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql("SELECT name, ts FROM last_seen")
        return sorted(tuple(row) for row in result)


async def play(store: Store, engine: Any, ops: list[tuple]) -> list[Any]:
    """Run ``ops`` on ``store`` (or on the model when ``store`` is a Model)."""
    answers: list[Any] = []
    next_key = 1000
    for op, *args in ops:
        if op == "apply":
            puts, deletes, specs, seen = args[0]
            dedupes = []
            for spec in specs:
                next_key += 1
                dedupes.append(DedupeRow(spec.sender, spec.client_id, spec.recipient,
                                         next_key, spec.created_at))
            batch = StoreBatch(puts, deletes, dedupes, seen)
            answers.append(store.apply(batch) if isinstance(store, Model)
                           else (await store.apply(batch)) and None)
        elif op == "last_seen":
            answers.append(sorted(store.seen.items()) if isinstance(store, Model)
                           else await _last_seen(engine))
        elif op == "create_user":
            answers.append(store.create_user(*args) if isinstance(store, Model)
                           else await store.create_user(*args, 0.0))
        else:
            answer = getattr(store, op)(*args)
            answers.append(answer if isinstance(store, Model) else await answer)
    return answers


@pytest.mark.postgres
def test_sqlite_postgresql_and_model_agree(tmp_path, pg_url) -> None:
    with asyncio.Runner() as runner:
        sqlite_url = f"sqlite:///{tmp_path / 'diff.db'}"
        lite = runner.run(Store.open(sqlite_url))
        pg = runner.run(Store.open(pg_url.url, schema=pg_url.schema))
        engines = {lite: create_engine(sqlite_url, pooled=False),
                   pg: create_engine(pg_url.url, schema=pg_url.schema, pooled=False)}

        async def clear() -> None:
            for engine in engines.values():
                async with engine.begin() as connection:
                    for table in TABLES:
                        await connection.exec_driver_sql(f"DELETE FROM {table}")

        @settings(max_examples=50, deadline=None)
        @given(st.lists(operations, max_size=30))
        def check(ops: list[tuple]) -> None:
            runner.run(clear())
            expected = runner.run(play(Model(), None, ops))  # type: ignore[arg-type]
            for store, engine in engines.items():
                got = runner.run(play(store, engine, ops))
                for step, (op, want, have) in enumerate(zip(ops, expected, got, strict=True)):
                    assert have == want, f"{store.dialect} step {step}: {op}"

        try:
            check()
        finally:
            for store, engine in engines.items():
                runner.run(store.close())
                runner.run(engine.dispose())
