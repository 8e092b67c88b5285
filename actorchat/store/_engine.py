"""Engines: one place that turns a database URL into a configured async engine.

URLs are normalised to the two async drivers we support (``postgresql+asyncpg``,
``sqlite+aiosqlite``) so operators can paste the usual ``postgres://`` URL. Each connection is
set up as the delivery contract needs it:

- SQLite: ``journal_mode=WAL`` (readers never block the writer), ``synchronous=FULL`` (a
  commit is fsynced before ``apply`` returns: an accepted message survives power loss;
  NORMAL would only survive a process crash), ``busy_timeout`` (wait for another writer
  instead of failing at once).
- PostgreSQL: ``search_path`` set to the chosen schema (tests and tenants never collide), a
  server-side ``statement_timeout``, a connect timeout, and ``application_name``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` with its async driver: ``postgres://``, ``postgresql://`` and
    ``postgresql+asyncpg://`` give asyncpg; ``sqlite://`` gives aiosqlite.

    Raises ValueError for other databases or drivers, and for in-memory SQLite, which
    would be a different empty database on every pooled connection and lose everything.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql"):
        if driver not in ("", "asyncpg"):
            raise ValueError(f"unsupported PostgreSQL driver {driver!r}: use asyncpg")
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        if driver not in ("", "aiosqlite"):
            raise ValueError(f"unsupported SQLite driver {driver!r}: use aiosqlite")
        if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
            raise ValueError("in-memory SQLite cannot be shared by the pool: use a file path")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database {backend!r}: use postgresql:// or sqlite:///PATH")


def sqlite_directory_problem(url: str | URL) -> str | None:
    """Why a SQLite database file at ``url`` cannot be opened, if its directory is missing.

    Checked before connecting because the error SQLite gives is opaque ("unable to open
    database file"), and because a failed aiosqlite connect leaves a worker thread that
    later reports to a possibly closed loop (omnilib/aiosqlite#241).
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database is None:
        return None
    directory = Path(parsed.database).expanduser().absolute().parent
    return None if directory.is_dir() else f"directory {directory} does not exist"


def check_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a plain lower-case identifier (so it is never quoted or
    injected anywhere), else raise ValueError."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}, not {schema!r}")
    return schema


def create_engine(
    url: str | URL,
    *,
    schema: str | None = None,
    pool_size: int = 5,
    statement_timeout: float | None = 5.0,
    pooled: bool = True,
) -> AsyncEngine:
    """Create an async engine for ``url`` configured for actorchat (see the module doc).

    ``schema`` (PostgreSQL only) becomes the connection's ``search_path``: tables and
    Alembic's version table live there. ``statement_timeout`` (seconds, None = none) bounds
    each statement on the server and the wait for a connection or a SQLite lock.
    ``pooled=False`` opens a connection per use (migrations, tools). The engine must be
    used and disposed on the asyncio loop that first uses it.
    """
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {}
    if pooled:
        kwargs.update(pool_size=pool_size, max_overflow=0, pool_timeout=statement_timeout or 30)
    else:
        kwargs["poolclass"] = NullPool
    if parsed.get_backend_name() == "postgresql":
        settings = {"application_name": "actorchat"}
        if schema is not None:
            settings["search_path"] = check_schema_name(schema)
        if statement_timeout is not None:
            settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
        connect_args = {"server_settings": settings, "timeout": statement_timeout or 60}
        return create_async_engine(parsed, connect_args=connect_args, **kwargs)
    if schema is not None:
        raise ValueError("schema applies to PostgreSQL only; SQLite keeps one per file")
    engine = create_async_engine(parsed, **kwargs)
    busy_ms = round((statement_timeout or 60) * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            set_sqlite_connection_pragmas(cursor, busy_ms)
            # WAL is a property of the file: set once, it stays. Switching takes an exclusive
            # lock without waiting on busy_timeout, so when connections open together on a
            # new file the losers get "database is locked": the winner is switching it.
            # (test_concurrent_upgrades_both_succeed)
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0] != "wal":
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                except Exception as error:
                    if "locked" not in str(error):
                        raise
        finally:
            cursor.close()

    return engine


def set_sqlite_connection_pragmas(cursor: Any, busy_ms: int) -> None:
    """What every SQLite connection of the store sets (the engine's pool and ``_direct.py``'s
    writer): wait up to ``busy_ms`` for the file's lock, and fsync every commit."""
    cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cursor.execute("PRAGMA synchronous=FULL")
