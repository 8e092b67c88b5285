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

from sqlalchemy import bindparam, delete, func, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._direct import DirectWriter
from ._engine import create_engine, sqlite_directory_problem
from ._errors import StoreClosed, StoreUnavailable, translated_errors
from ._media import MediaMethods
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
from ._schema import (
    DEDUPE_COLUMNS,
    MAIL_COLUMNS,
    dedupe,
    group_members,
    groups,
    last_seen,
    mail,
    users,
)

# A row's values in column order, as one C-level call per row.
_mail_values = attrgetter(*MAIL_COLUMNS)
_dedupe_values = attrgetter(*DEDUPE_COLUMNS)
_CALL_TIMEOUT_MARGIN = 1.0  # seconds a call may take beyond statement_timeout
# Bound parameters per IN (...) list: far below SQLite's limit, and few distinct statements.
_IN_CHUNK = 500


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class Store(MediaMethods):  # media methods: _media.py
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
        # SQLite: ``apply`` writes on a plain sqlite3 connection in this thread (_direct.py).
        self._direct: DirectWriter | None = None
        if self.dialect == "sqlite" and engine.url.database and not engine.url.query:
            self._direct = DirectWriter(engine.url.database, round(timeout * 1000))
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
        if self._direct is not None:
            self._direct.close()
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise StoreClosed(f"{what}: the store is closed")

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        self._check_open(what)
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

    async def presence_of(self, names: Iterable[str]) -> dict[str, float | None]:
        """For each of ``names`` that is a registered user: its last-seen time, or None if
        it was never seen online (one read answers both questions a subscribe asks)."""
        wanted = sorted(set(names))
        for name in wanted:
            check_name("name", name)
        found: dict[str, float | None] = {}
        async with self._read("presence_of") as connection:
            for chunk in _chunks(wanted):
                result = await connection.execute(
                    select(users.c.name, last_seen.c.ts)
                    .select_from(users.outerjoin(last_seen, last_seen.c.name == users.c.name))
                    .where(users.c.name.in_(chunk))
                )
                found.update((name, ts) for name, ts in result)
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
        statements = [
            (sql, rows) for sql, rows in (
                (self._insert_mail, mail_rows), (self._insert_dedupe, dedupe_rows),
                (self._delete_mail, deletes), (self._upsert_last_seen, seen_rows),
            ) if rows
        ]
        started = time.perf_counter()
        if self._direct is not None:
            self._check_open("apply")
            if statements:
                self._direct.apply("apply", statements)
        elif statements:
            async with self._write("apply") as connection:
                for sql, rows in statements:
                    await connection.exec_driver_sql(sql, rows)
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

    async def load_mailboxes(
        self, recipients: Iterable[str], dedupe_limit: int, page: int
    ) -> dict[str, tuple[int | None, list[DedupeRow], list[MailRow]]]:
        """For each of ``recipients``: ``(max_key, recent_dedupe(dedupe_limit),
        fetch_mail(None, page))``, what a mailbox loads when it starts, for many users on one
        connection (a burst of first logins; ``StoreActor`` batches a hop's mailbox loads).
        Two grouped queries find every user's largest keys; only a user with stored rows
        costs queries of its own (most first logins have none)."""
        wanted = sorted(set(recipients))
        for name in wanted:
            check_name("recipient", name)
        if page <= 0:
            raise ValueError(f"page must be positive, not {page}")
        in_mail: dict[str, int] = {}
        in_dedupe: dict[str, int] = {}
        loaded: dict[str, tuple[int | None, list[DedupeRow], list[MailRow]]] = {}
        async with self._read("load_mailboxes") as connection:
            for chunk in _chunks(wanted):
                for table, found in ((mail, in_mail), (dedupe, in_dedupe)):
                    rows = await connection.execute(
                        select(table.c.recipient, func.max(table.c["key"]))
                        .where(table.c.recipient.in_(chunk))
                        .group_by(table.c.recipient)
                    )
                    found.update((name, key) for name, key in rows if key is not None)
            for name in wanted:
                mail_key, dedupe_key = in_mail.get(name), in_dedupe.get(name)
                recent: list[DedupeRow] = []
                if dedupe_key is not None:
                    rows = await connection.execute(self._recent_dedupe(name, dedupe_limit))
                    recent = [DedupeRow(*row) for row in rows]
                first: list[MailRow] = []
                if mail_key is not None:
                    rows = await connection.execute(self._fetch_first, {"r": name, "n": page})
                    first = [MailRow(*row) for row in rows]
                keys = [key for key in (mail_key, dedupe_key) if key is not None]
                loaded[name] = (max(keys) if keys else None, recent, first)
        return loaded

    # -- dedupe --------------------------------------------------------------------------

    async def recent_dedupe(self, recipient: str, limit: int) -> list[DedupeRow]:
        """``recipient``'s ``limit`` most recent dedupe entries, newest first (to warm a
        mailbox's in-memory filter of retried ids)."""
        check_name("recipient", recipient)
        async with self._read("recent_dedupe") as connection:
            rows = await connection.execute(self._recent_dedupe(recipient, limit))
            return [DedupeRow(*row) for row in rows]

    @staticmethod
    def _recent_dedupe(recipient: str, limit: int) -> Any:
        return (
            select(*dedupe.c).where(dedupe.c.recipient == recipient)
            .order_by(dedupe.c.created_at.desc(), dedupe.c["key"].desc()).limit(limit)
        )

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


    # -- groups (issue 7) -------------------------------------------------------------------

    async def create_group(
        self, group: str, name: str, owner: str, members: list[str], now: float
    ) -> None:
        """A new group; ``members`` in joining order (the owner among them)."""
        check_name("group", group)
        check_text("name", name)
        check_name("owner", owner)
        check_time("now", now)
        for member in members:
            check_name("member", member)
        async with self._write("create_group") as connection:
            await connection.execute(
                groups.insert(), {"id": group, "name": name, "owner": owner, "created_at": now}
            )
            await connection.execute(
                group_members.insert(),
                [{"grp": group, "member": m, "joined_at": now + i * 1e-6}
                 for i, m in enumerate(members)],
            )

    async def load_group(self, group: str) -> tuple[str, str, list[str]] | None:
        """(name, owner, members in joining order) of ``group``, or None if there is none."""
        check_name("group", group)
        async with self._read("load_group") as connection:
            row = (await connection.execute(
                select(groups.c.name, groups.c.owner).where(groups.c.id == group)
            )).first()
            if row is None:
                return None
            members = await connection.scalars(
                select(group_members.c.member).where(group_members.c.grp == group)
                .order_by(group_members.c.joined_at, group_members.c.member)
            )
            return row[0], row[1], list(members)

    async def groups_of(self, member: str) -> list[tuple[str, str, str, list[str]]]:
        """Every group ``member`` belongs to: (group, name, owner, members), by group id."""
        check_name("member", member)
        async with self._read("groups_of") as connection:
            ids = sorted(await connection.scalars(
                select(group_members.c.grp).where(group_members.c.member == member)
            ))
            found = await self._describe_groups(connection, ids)
        return [(gid, *found[gid]) for gid in ids if gid in found]

    async def groups_of_many(
        self, members: Iterable[str]
    ) -> dict[str, list[tuple[str, str, str, list[str]]]]:
        """``groups_of`` for each of ``members``, on one connection (``StoreActor`` batches a
        hop's welcome reads): a few queries for any number of users."""
        wanted = sorted(set(members))
        for member in wanted:
            check_name("member", member)
        ids_of: dict[str, list[str]] = {member: [] for member in wanted}
        async with self._read("groups_of_many") as connection:
            for chunk in _chunks(wanted):
                for gid, member in await connection.execute(
                    select(group_members.c.grp, group_members.c.member)
                    .where(group_members.c.member.in_(chunk))
                ):
                    ids_of[member].append(gid)
            every = sorted({gid for ids in ids_of.values() for gid in ids})
            found = await self._describe_groups(connection, every)
        return {
            member: [(gid, found[gid][0], found[gid][1], list(found[gid][2]))
                     for gid in sorted(ids) if gid in found]
            for member, ids in ids_of.items()
        }

    @staticmethod
    async def _describe_groups(
        connection: AsyncConnection, ids: list[str]
    ) -> dict[str, tuple[str, str, list[str]]]:
        """(name, owner, members in joining order) of each of ``ids`` that exists."""
        found: dict[str, tuple[str, str, list[str]]] = {}
        for chunk in _chunks(ids):
            for gid, name, owner in await connection.execute(
                select(groups.c.id, groups.c.name, groups.c.owner)
                .where(groups.c.id.in_(chunk))
            ):
                found[gid] = (name, owner, [])
            for gid, m in await connection.execute(
                select(group_members.c.grp, group_members.c.member)
                .where(group_members.c.grp.in_(chunk))
                .order_by(group_members.c.grp, group_members.c.joined_at,
                          group_members.c.member)
            ):
                if gid in found:
                    found[gid][2].append(m)
        return found

    async def change_group(
        self, group: str, add: list[str], remove: list[str], owner: str, now: float
    ) -> None:
        """Add and remove members and set the owner, in one transaction; a group left with
        no members is deleted."""
        check_name("group", group)
        check_name("owner", owner)
        check_time("now", now)
        for m in [*add, *remove]:
            check_name("member", m)
        ins = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        async with self._write("change_group") as connection:
            if add:
                await connection.execute(
                    ins(group_members).on_conflict_do_nothing(index_elements=["grp", "member"]),
                    [{"grp": group, "member": m, "joined_at": now + i * 1e-6}
                     for i, m in enumerate(add)],
                )
            for chunk in _chunks(sorted(set(remove))):
                await connection.execute(
                    delete(group_members).where(
                        group_members.c.grp == group, group_members.c.member.in_(chunk)
                    )
                )
            left = await connection.scalar(
                select(func.count()).select_from(group_members)
                .where(group_members.c.grp == group)
            )
            if left:
                await connection.execute(
                    groups.update().where(groups.c.id == group).values(owner=owner)
                )
            else:
                await connection.execute(delete(groups).where(groups.c.id == group))

    async def put_group_copies(self, copies: list[MailRow], now_us: int) -> int:
        """Store copies of group messages for recipients that have no mailbox actor running
        (the caller holds them off meanwhile: ``Registry.hold_offline``), in ONE transaction.

        The keys of ``copies`` are ignored: each recipient's copies get keys in list order,
        above every key of its stored mail and at least ``now_us`` (a mailbox's own keys are
        above the wall clock in microseconds when handed out, so this stays above those too).
        A copy whose (sender, client_id, recipient) is in ``dedupe`` already (a retry, or a
        copy written before a crash) is skipped. Returns how many copies were written."""
        if not copies:
            return 0
        check_time("now_us", now_us)
        recipients = sorted({c.recipient for c in copies})
        messages = sorted({(c.sender, c.client_id) for c in copies})
        top: dict[str, int] = {}
        seen: set[tuple[str, str, str]] = set()
        async with self._write("put_group_copies") as connection:
            for chunk in _chunks(recipients):
                result = await connection.execute(
                    select(mail.c.recipient, func.max(mail.c["key"]))
                    .where(mail.c.recipient.in_(chunk)).group_by(mail.c.recipient)
                )
                top.update((r, k) for r, k in result if k is not None)
            for sender, client_id in messages:
                result = await connection.scalars(
                    select(dedupe.c.recipient)
                    .where(dedupe.c.sender == sender, dedupe.c.client_id == client_id)
                )
                seen.update((sender, client_id, r) for r in result)
            mail_rows: list[tuple[Any, ...]] = []
            dedupe_rows: list[tuple[Any, ...]] = []
            for c in copies:
                who = (c.sender, c.client_id, c.recipient)
                if who in seen:
                    continue
                seen.add(who)
                key = max(top.get(c.recipient, 0) + 1, now_us)
                top[c.recipient] = key
                row = MailRow(c.recipient, key, c.sender, c.client_id, c.body, c.ts, c.grp,
                              c.media)
                mail_rows.append(_mail_values(row))
                dedupe_rows.append(
                    _dedupe_values(DedupeRow(c.sender, c.client_id, c.recipient, key, c.ts))
                )
            if mail_rows:
                await connection.exec_driver_sql(self._insert_mail, mail_rows)
                await connection.exec_driver_sql(self._insert_dedupe, dedupe_rows)
        return len(mail_rows)


    # -- cluster (issue 6): membership leases and mailbox ownership ---------------------------
    # Every lease is judged by the DATABASE's clock (``_db_now``), never a node's own, so
    # nodes whose clocks disagree still agree on who is alive. Plain SQL: the statements are
    # the same on both dialects (SQLite's upsert and PostgreSQL's ON CONFLICT agree here).

    async def _db_now(self, connection: AsyncConnection) -> float:
        if self.dialect == "postgresql":
            value = await connection.scalar(text("SELECT extract(epoch FROM clock_timestamp())"))
            return float(value)
        return time.time()  # SQLite: one host, one clock

    async def cluster_join(
        self, name: str, incarnation: int, address: str, proof: str, lease: float
    ) -> float | None:
        """Join as ``name``/``incarnation`` with a lease of ``lease`` seconds. Returns None, or
        the seconds left on the lease of ANOTHER live incarnation of ``name`` (then nothing
        was written: wait and try again)."""
        check_name("name", name)
        async with self._write("cluster_join") as connection:
            now = await self._db_now(connection)
            row = (await connection.execute(
                text("SELECT incarnation, lease_expires FROM cluster_nodes WHERE name = :n"),
                {"n": name},
            )).first()
            if row is not None and row[0] != incarnation and row[1] > now:
                return float(row[1] - now)
            await connection.execute(
                text(
                    "INSERT INTO cluster_nodes (name, incarnation, address, proof, started_at,"
                    " lease_expires, users) VALUES (:n, :i, :a, :p, :now, :exp, 0)"
                    " ON CONFLICT (name) DO UPDATE SET incarnation = excluded.incarnation,"
                    " address = excluded.address, proof = excluded.proof,"
                    " started_at = excluded.started_at, lease_expires = excluded.lease_expires,"
                    " users = 0"
                ),
                {"n": name, "i": incarnation, "a": address, "p": proof, "now": now,
                 "exp": now + lease},
            )
        return None

    async def cluster_renew(
        self, name: str, incarnation: int, lease: float, users: int
    ) -> tuple[bool, float, list[tuple[Any, ...]]]:
        """Renew our lease (only if it has not lapsed) and read every member. Returns
        (renewed, database now, rows of (name, incarnation, address, proof, started_at,
        lease_expires, users)). Not renewed: the lease lapsed or another incarnation took the
        name; the caller must stop serving (fence) and join again."""
        async with self._write("cluster_renew") as connection:
            now = await self._db_now(connection)
            result = await connection.execute(
                text(
                    "UPDATE cluster_nodes SET lease_expires = :exp, users = :u"
                    " WHERE name = :n AND incarnation = :i AND lease_expires > :now"
                ),
                {"exp": now + lease, "u": users, "n": name, "i": incarnation, "now": now},
            )
            rows = (await connection.execute(text(
                "SELECT name, incarnation, address, proof, started_at, lease_expires, users"
                " FROM cluster_nodes ORDER BY name"
            ))).all()
        return result.rowcount == 1, now, [tuple(row) for row in rows]

    async def cluster_leave(self, name: str, incarnation: int) -> None:
        """End our lease now (a clean stop): our users are free to claim at once."""
        async with self._write("cluster_leave") as connection:
            await connection.execute(
                text("UPDATE cluster_nodes SET lease_expires = 0"
                     " WHERE name = :n AND incarnation = :i"),
                {"n": name, "i": incarnation},
            )

    async def cluster_claim(self, user: str, node: str, incarnation: int) -> tuple[str, int]:
        """Make ``node``/``incarnation`` the owner of ``user``'s mailbox unless a LIVE member
        owns it; returns the owner after the call (ours if the claim won). Atomic: the
        upsert's condition is judged under the row's lock, so two claimants never both win."""
        return (await self.cluster_claim_many([user], node, incarnation))[user]

    async def cluster_claim_many(
        self, names: list[str], node: str, incarnation: int
    ) -> dict[str, tuple[str, int]]:
        """``cluster_claim`` for many users in one transaction (a login burst after a node
        died claims its users together): each user's owner after the call."""
        wanted = sorted(set(names))
        for name in wanted:
            check_name("user", name)
        owners: dict[str, tuple[str, int]] = {}
        async with self._write("cluster_claim_many") as connection:
            now = await self._db_now(connection)
            await connection.execute(
                text(
                    "INSERT INTO cluster_owners (name, node, incarnation, since)"
                    " VALUES (:u, :n, :i, :now)"
                    " ON CONFLICT (name) DO UPDATE SET node = excluded.node,"
                    " incarnation = excluded.incarnation, since = excluded.since"
                    " WHERE cluster_owners.node = excluded.node OR NOT EXISTS ("
                    "SELECT 1 FROM cluster_nodes m WHERE m.name = cluster_owners.node"
                    " AND m.incarnation = cluster_owners.incarnation AND m.lease_expires > :now)"
                ),
                [{"u": u, "n": node, "i": incarnation, "now": now} for u in wanted],
            )
            for chunk in _chunks(wanted):
                rows = await connection.execute(
                    text("SELECT name, node, incarnation FROM cluster_owners"
                         " WHERE name IN :names").bindparams(
                        bindparam("names", expanding=True)),
                    {"names": chunk},
                )
                owners.update((str(n), (str(o), int(i))) for n, o, i in rows)
        return owners

    async def cluster_owner(self, user: str) -> tuple[str, int, bool] | None:
        """(node, incarnation, alive) of ``user``'s owner, or None if nobody ever owned it."""
        check_name("user", user)
        async with self._read("cluster_owner") as connection:
            now = await self._db_now(connection)
            row = (await connection.execute(
                text(
                    "SELECT o.node, o.incarnation, m.incarnation, m.lease_expires"
                    " FROM cluster_owners o LEFT JOIN cluster_nodes m ON m.name = o.node"
                    " WHERE o.name = :u"
                ),
                {"u": user},
            )).first()
        if row is None:
            return None
        alive = row[2] is not None and row[2] == row[1] and row[3] > now
        return str(row[0]), int(row[1]), bool(alive)

    async def cluster_transfer(
        self, user: str, old: tuple[str, int], new: tuple[str, int]
    ) -> bool:
        """Hand ``user`` from ``old`` to ``new`` (node, incarnation) if ``old`` still owns it."""
        async with self._write("cluster_transfer") as connection:
            now = await self._db_now(connection)
            result = await connection.execute(
                text(
                    "UPDATE cluster_owners SET node = :nn, incarnation = :ni, since = :now"
                    " WHERE name = :u AND node = :on AND incarnation = :oi"
                ),
                {"nn": new[0], "ni": new[1], "now": now, "u": user, "on": old[0],
                 "oi": old[1]},
            )
        return result.rowcount == 1

    async def cluster_status(self) -> tuple[float, list[tuple[Any, ...]], dict[str, int]]:
        """(database now, member rows as in ``cluster_renew``, mailboxes owned per node by
        its current incarnation): for ``python -m actorchat cluster``."""
        async with self._read("cluster_status") as connection:
            now = await self._db_now(connection)
            rows = (await connection.execute(text(
                "SELECT name, incarnation, address, proof, started_at, lease_expires, users"
                " FROM cluster_nodes ORDER BY name"
            ))).all()
            owned = (await connection.execute(text(
                "SELECT o.node, count(*) FROM cluster_owners o JOIN cluster_nodes m"
                " ON m.name = o.node AND m.incarnation = o.incarnation GROUP BY o.node"
            ))).all()
        return now, [tuple(row) for row in rows], {str(n): int(c) for n, c in owned}


    # -- the relay: mail that could not cross a link ------------------------------------------
    async def cluster_relay_put(self, rows: list[tuple[Any, ...]]) -> None:
        """Store ``(origin, recipient, sender, client_id, body, ts, grp, media)`` rows, in
        order, in one transaction (then they are accepted: the owner takes them in order)."""
        if not rows:
            return
        keys = ("o", "r", "s", "c", "b", "t", "g", "m")
        async with self._write("cluster_relay_put") as connection:
            await connection.execute(
                text(
                    "INSERT INTO cluster_relay (origin, recipient, sender, client_id, body, ts,"
                    " grp, media) VALUES (:o, :r, :s, :c, :b, :t, :g, :m)"
                ),
                [dict(zip(keys, row, strict=True)) for row in rows],
            )

    async def cluster_relay_waiting(self, origin: str) -> set[str]:
        """Recipients that still have relayed mail from ``origin`` waiting."""
        async with self._read("cluster_relay_waiting") as connection:
            rows = await connection.execute(
                text("SELECT DISTINCT recipient FROM cluster_relay WHERE origin = :o"),
                {"o": origin},
            )
            return {str(row[0]) for row in rows}

    async def cluster_relay_fetch(
        self, node: str, incarnation: int, limit: int
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """Relayed mail for the users ``node``/``incarnation`` owns, in ``id`` order, as
        ``(id, recipient, sender, client_id, body, ts, grp, media)``; and recipients of
        relayed mail that no live member owns (to claim)."""
        async with self._read("cluster_relay_fetch") as connection:
            now = await self._db_now(connection)
            mine = (await connection.execute(
                text(
                    "SELECT r.id, r.recipient, r.sender, r.client_id, r.body, r.ts, r.grp,"
                    " r.media FROM cluster_relay r JOIN cluster_owners o"
                    " ON o.name = r.recipient AND o.node = :n AND o.incarnation = :i"
                    " ORDER BY r.id LIMIT :l"
                ),
                {"n": node, "i": incarnation, "l": limit},
            )).all()
            orphans = (await connection.execute(
                text(
                    "SELECT DISTINCT r.recipient FROM cluster_relay r"
                    " LEFT JOIN cluster_owners o ON o.name = r.recipient"
                    " LEFT JOIN cluster_nodes m ON m.name = o.node"
                    " AND m.incarnation = o.incarnation AND m.lease_expires > :now"
                    " WHERE m.name IS NULL LIMIT :l"
                ),
                {"now": now, "l": limit},
            )).all()
        return [tuple(row) for row in mine], [str(row[0]) for row in orphans]

    async def cluster_relay_delete(self, ids: list[int]) -> None:
        async with self._write("cluster_relay_delete") as connection:
            await connection.execute(
                text("DELETE FROM cluster_relay WHERE id = :i"), [{"i": i} for i in ids]
            )


_OPEN_TOKEN = object()
