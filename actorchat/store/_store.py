"""``Store``: the asyncio persistence API the store actor drives.

It runs on the asyncio loop of the store actor's own thread (the trio side never awaits it
directly). Every method is one transaction, and writes come in batches (``apply``: one group
commit for many messages), because a round trip to the thread, the database and the disk costs
the same for one row as for a thousand.

Every call is bounded: the database enforces ``statement_timeout`` on each statement (and
SQLite waits that long for a lock), and the whole call is abandoned one second later still
(a hung network, a full pool). A database that is down or slow surfaces as
``StoreUnavailable`` and the caller retries the same call later (all writes are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from operator import attrgetter
from typing import Any, Self

from sqlalchemy import bindparam, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._engine import create_engine, sqlite_directory_problem
from ._errors import StoreClosed, StoreUnavailable, translated_errors
from ._migrate import check_revision, upgrade
from ._rows import (
    BatchResult,
    DedupeRow,
    MailRow,
    StoreBatch,
    check_name,
    check_text,
    check_time,
)
from ._schema import DEDUPE_COLUMNS, MAIL_COLUMNS, dedupe, last_seen, mail, users

# A row's values in column order, as one C-level call per row.
_mail_values = attrgetter(*MAIL_COLUMNS)
_dedupe_values = attrgetter(*DEDUPE_COLUMNS)
_CALL_TIMEOUT_MARGIN = 1.0  # seconds a call may take beyond statement_timeout
# Bound parameters per IN (...) list: far below SQLite's limit, and few distinct statements.
_IN_CHUNK = 500


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class Store:
    """The chat's durable state: users, stored mail, delivered-id memory, presence.

    Make one with ``await Store.open(url)``; use it from one asyncio loop; ``await close()``.
    """

    def __init__(self, engine: AsyncEngine, timeout: float, *, _token: object = None) -> None:
        if _token is not _OPEN_TOKEN:
            raise TypeError("use 'await Store.open(url)' to make a Store")
        self._engine = engine
        # Reads are single statements: autocommit spares PostgreSQL a BEGIN and a COMMIT.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Server-side limits fire first and leave the connection usable; this one is the
        # backstop, and cancelling a call makes SQLAlchemy discard its connection.
        self._timeout = timeout + _CALL_TIMEOUT_MARGIN
        self._closed = False
        self.dialect: str = engine.dialect.name
        """``"postgresql"`` or ``"sqlite"``."""
        ins = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._insert_user = ins(users).on_conflict_do_nothing(index_elements=["name"])
        # The hot path's statements are built with Core once, compiled once for this dialect,
        # and run as executemany with positional tuples: SQLAlchemy's per-row work (building
        # and binding a dict for each row) was a quarter of apply()'s time on PostgreSQL.
        self._insert_mail = self._compile(
            ins(mail).on_conflict_do_nothing(index_elements=["recipient", "key"]),
            MAIL_COLUMNS)
        self._delete_mail = self._compile(
            delete(mail).where(mail.c.recipient == bindparam("r"),
                               mail.c["key"] == bindparam("k")),
            ("r", "k"))
        self._insert_dedupe = self._compile(
            ins(dedupe).on_conflict_do_nothing(
                index_elements=["sender", "client_id", "recipient"]),
            DEDUPE_COLUMNS)
        upsert = ins(last_seen)
        later = func.max if self.dialect == "sqlite" else func.greatest
        self._upsert_last_seen = self._compile(
            # Keep the later time, so batches applied out of order never move it back.
            upsert.on_conflict_do_update(index_elements=["name"],
                                         set_={"ts": later(upsert.excluded.ts, last_seen.c.ts)}),
            ("name", "ts"))
        self._fetch_first = (
            select(*mail.c).where(mail.c.recipient == bindparam("r"))
            .order_by(mail.c["key"]).limit(bindparam("n"))
        )
        self._fetch_after = (
            select(*mail.c)
            .where(mail.c.recipient == bindparam("r"), mail.c["key"] > bindparam("a"))
            .order_by(mail.c["key"]).limit(bindparam("n"))
        )

    def _compile(self, statement: Any, parameters: tuple[str, ...]) -> str:
        compiled = statement.compile(dialect=self._engine.dialect)
        if tuple(compiled.positiontup or ()) != parameters:  # guards the tuples built below
            raise AssertionError(f"{compiled.string}: parameters {compiled.positiontup}")
        return compiled.string

    @classmethod
    async def open(
        cls,
        url: str | URL,
        *,
        schema: str | None = None,
        pool_size: int = 5,
        statement_timeout: float = 5.0,
        migrate: bool = True,
    ) -> Self:
        """Connect to ``url`` (``postgresql://…``, ``postgres://…`` or ``sqlite:///path``).

        ``migrate=True`` upgrades the schema first; ``migrate=False`` only checks it is
        current (SchemaTooOld otherwise). Either way SchemaTooNew if the database is ahead
        of the code, StoreUnavailable if unreachable. ``schema`` is the PostgreSQL schema.
        """
        if problem := sqlite_directory_problem(url):
            raise StoreUnavailable(f"open: {problem}")
        await (upgrade(url, schema) if migrate else check_revision(url, schema))
        engine = create_engine(url, schema=schema, pool_size=pool_size,
                               statement_timeout=statement_timeout)
        return cls(engine, statement_timeout, _token=_OPEN_TOKEN)

    async def close(self) -> None:
        """Close every connection. Calls after this raise StoreClosed."""
        self._closed = True
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        if self._closed:
            raise StoreClosed(f"{what}: the store is closed")
        try:
            # The timeout cancels the call (SQLAlchemy then discards its connection) and
            # raises TimeoutError out here; errors inside are translated before that.
            async with asyncio.timeout(self._timeout), translated_errors(what):
                yield
        except TimeoutError as error:
            raise StoreUnavailable(f"{what}: no answer within {self._timeout:g} s") from error

    @contextlib.asynccontextmanager
    async def _write(self, what: str) -> AsyncIterator[AsyncConnection]:
        async with self._guard(what), self._engine.begin() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _read(self, what: str) -> AsyncIterator[AsyncConnection]:
        async with self._guard(what), self._reader.connect() as connection:
            yield connection

    async def ping(self) -> None:
        """Round-trip ``SELECT 1``: raises StoreUnavailable when the database is not there."""
        async with self._read("ping") as connection:
            await connection.exec_driver_sql("SELECT 1")

    # -- users ---------------------------------------------------------------------------

    async def create_user(self, name: str, password_hash: str, now: float) -> bool:
        """Register ``name``; False if it is taken. (A retry after StoreUnavailable may see
        False because the first attempt did commit: check the hash to tell.)"""
        check_name("name", name)
        check_text("password_hash", password_hash)
        check_time("now", now)
        async with self._write("create_user") as connection:
            result = await connection.execute(
                self._insert_user, {"name": name, "password_hash": password_hash,
                                    "created_at": now}
            )
        return result.rowcount == 1

    async def get_password_hash(self, name: str) -> str | None:
        """The stored password hash of ``name``, or None if there is no such user."""
        check_name("name", name)
        async with self._read("get_password_hash") as connection:
            return await connection.scalar(
                select(users.c.password_hash).where(users.c.name == name)
            )

    async def users_exist(self, names: Iterable[str]) -> set[str]:
        """The subset of ``names`` that are registered users."""
        wanted = sorted(set(names))
        for name in wanted:
            check_name("name", name)
        found: set[str] = set()
        async with self._read("users_exist") as connection:
            for chunk in _chunks(wanted):
                result = await connection.scalars(
                    select(users.c.name).where(users.c.name.in_(chunk))
                )
                found.update(result)
        return found

    # -- the hot path ----------------------------------------------------------------------

    async def apply(self, batch: StoreBatch) -> BatchResult:
        """Write ``batch`` in one transaction (one group commit); see ``StoreBatch``.

        Each part is one executemany, so a batch costs a handful of round trips however
        many rows it holds. On StoreUnavailable the outcome is unknown: apply it again.
        """
        mail_rows = [_mail_values(row) for row in batch.put_mail]
        dedupe_rows = [_dedupe_values(row) for row in batch.put_dedupe]
        deletes = list(batch.delete_mail)
        latest: dict[str, float] = {}
        for name, ts in batch.last_seen:
            check_name("last_seen name", name)
            check_time("last_seen ts", ts)
            if ts >= latest.get(name, ts):
                latest[name] = ts
        seen_rows = list(latest.items())
        started = time.perf_counter()
        if mail_rows or deletes or dedupe_rows or seen_rows:
            async with self._write("apply") as connection:
                if mail_rows:
                    await connection.exec_driver_sql(self._insert_mail, mail_rows)
                if dedupe_rows:
                    await connection.exec_driver_sql(self._insert_dedupe, dedupe_rows)
                if deletes:
                    await connection.exec_driver_sql(self._delete_mail, deletes)
                if seen_rows:
                    await connection.exec_driver_sql(self._upsert_last_seen, seen_rows)
        return BatchResult(
            mail_put=len(mail_rows), mail_deleted=len(deletes), dedupe_put=len(dedupe_rows),
            last_seen=len(seen_rows), seconds=time.perf_counter() - started,
        )

    # -- mail ----------------------------------------------------------------------------

    async def fetch_mail(self, recipient: str, after_key: int | None, limit: int) -> list[MailRow]:
        """Up to ``limit`` of ``recipient``'s stored messages with key > ``after_key`` (all
        if None), in key order. Page with the last key returned: memory stays flat however
        much is stored."""
        check_name("recipient", recipient)
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit}")
        if after_key is None:
            statement: Any = self._fetch_first
            params: dict[str, object] = {"r": recipient, "n": limit}
        else:
            statement, params = self._fetch_after, {"r": recipient, "a": after_key, "n": limit}
        async with self._read("fetch_mail") as connection:
            result = await connection.execute(statement, params)
            return [MailRow(*row) for row in result]

    async def max_key(self, recipient: str) -> int | None:
        """The largest key stored for ``recipient`` in mail or dedupe, or None: a new mailbox
        continues its ordering above every key it (or a crashed predecessor) handed out."""
        check_name("recipient", recipient)
        in_mail = select(func.max(mail.c["key"])).where(mail.c.recipient == recipient)
        in_dedupe = select(func.max(dedupe.c["key"])).where(dedupe.c.recipient == recipient)
        async with self._read("max_key") as connection:
            row = (await connection.execute(
                select(in_mail.scalar_subquery(), in_dedupe.scalar_subquery())
            )).one()
        keys = [key for key in row if key is not None]
        return max(keys) if keys else None

    # -- dedupe --------------------------------------------------------------------------

    async def recent_dedupe(self, recipient: str, limit: int) -> list[DedupeRow]:
        """``recipient``'s ``limit`` most recent dedupe entries, newest first (to warm a
        mailbox's in-memory filter of retried ids)."""
        check_name("recipient", recipient)
        statement = (
            select(*dedupe.c).where(dedupe.c.recipient == recipient)
            .order_by(dedupe.c.created_at.desc(), dedupe.c["key"].desc()).limit(limit)
        )
        async with self._read("recent_dedupe") as connection:
            return [DedupeRow(*row) for row in await connection.execute(statement)]

    async def lookup_dedupe(
        self, sender: str, client_ids: Iterable[str], recipient: str
    ) -> dict[str, int]:
        """For each of ``sender``'s ``client_ids`` already given to ``recipient``: its key."""
        check_name("sender", sender)
        check_name("recipient", recipient)
        wanted = sorted(set(client_ids))
        for client_id in wanted:
            check_text("client_id", client_id)
        found: dict[str, int] = {}
        async with self._read("lookup_dedupe") as connection:
            for chunk in _chunks(wanted):
                result = await connection.execute(
                    select(dedupe.c.client_id, dedupe.c["key"]).where(
                        dedupe.c.sender == sender,
                        dedupe.c.recipient == recipient,
                        dedupe.c.client_id.in_(chunk),
                    )
                )
                found.update((client_id, key) for client_id, key in result)
        return found

    async def prune_dedupe(self, older_than: float, *, limit: int = 10_000) -> int:
        """Forget up to ``limit`` dedupe entries created before ``older_than``, oldest first;
        returns how many. Call again while it returns ``limit``: bounded deletes never hit
        the statement timeout however large the backlog."""
        check_time("older_than", older_than)
        victims = (
            select(dedupe.c.sender, dedupe.c.client_id, dedupe.c.recipient)
            .where(dedupe.c.created_at < older_than)
            .order_by(dedupe.c.created_at).limit(limit)
        )
        statement = delete(dedupe).where(
            tuple_(dedupe.c.sender, dedupe.c.client_id, dedupe.c.recipient).in_(victims)
        )
        async with self._write("prune_dedupe") as connection:
            result = await connection.execute(statement)
        return result.rowcount


_OPEN_TOKEN = object()
