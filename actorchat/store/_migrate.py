"""Schema migrations, run from code: no ``alembic.ini`` is needed at runtime.

Several nodes may start at once against one PostgreSQL database, so ``upgrade`` holds a
transaction-scoped advisory lock while it checks and migrates, and it refuses (``SchemaTooNew``)
before writing anything when the database was migrated by code newer than this one.
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine import create_engine, sqlite_directory_problem
from ._errors import SchemaTooNew, SchemaTooOld, StoreUnavailable, translated_errors

SCRIPT_LOCATION = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(*, schema: str | None = None) -> Config:
    """An Alembic ``Config`` built in memory, pointing at actorchat's migrations."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["schema"] = schema
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = _script().get_current_head()
    assert head is not None, "actorchat/migrations/versions has no revisions"
    return head


def _database_heads(connection: Connection, schema: str | None) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_heads()


def verify_revision(connection: Connection, schema: str | None, *, allow_older: bool) -> None:
    """Raise SchemaTooNew if the database has a revision this code lacks; unless
    ``allow_older``, raise SchemaTooOld if it is not at the code's head."""
    known = {script.revision for script in _script().walk_revisions()}
    heads = _database_heads(connection, schema)
    head = head_revision()
    for revision in heads:
        if revision not in known:
            raise SchemaTooNew(revision, head)
    if not allow_older and heads != (head,):
        raise SchemaTooOld(heads[0] if heads else None, head)


def _upgrade_in(connection: Connection, schema: str | None) -> None:
    verify_revision(connection, schema, allow_older=True)
    config = alembic_config(schema=schema)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(url: str | URL, schema: str | None = None) -> str:
    """Migrate the database at ``url`` (in ``schema``, PostgreSQL only, created if missing)
    to the newest revision, in one transaction on PostgreSQL, and return that revision.

    Raises SchemaTooNew, having written nothing, if the database is ahead of this code, and
    StoreUnavailable if it cannot be reached.
    """
    if problem := sqlite_directory_problem(url):
        raise StoreUnavailable(f"upgrade: {problem}")
    engine = create_engine(url, schema=schema, pooled=False, statement_timeout=None)
    try:
        async with translated_errors("upgrade"), engine.begin() as connection:
            # Serialise concurrent start-ups (one migrates, the others then find head), and
            # make check-then-migrate one transaction: it all happens or none of it.
            if connection.dialect.name == "postgresql":
                key = zlib.crc32(f"actorchat.migrate:{schema}".encode())
                await connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
                if schema is not None:
                    await _create_schema_if_missing(connection, schema)
            else:
                # Python's sqlite3 would run the DDL outside any transaction; SQLite itself
                # has transactional DDL, and IMMEDIATE takes the write lock up front.
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            await connection.run_sync(_upgrade_in, schema)
    finally:
        await engine.dispose()
    return head_revision()


async def _create_schema_if_missing(connection: AsyncConnection, schema: str) -> None:
    # Look first: CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database, which a
    # deployment with a DBA-made schema may not grant.
    exists = await connection.scalar(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
    )
    if not exists:
        await connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')


async def current_revision(url: str | URL, schema: str | None = None) -> str | None:
    """The database's schema revision, or None if it was never migrated."""
    if problem := sqlite_directory_problem(url):
        raise StoreUnavailable(f"current_revision: {problem}")
    engine = create_engine(url, schema=schema, pooled=False, statement_timeout=None)
    try:
        async with translated_errors("current_revision"), engine.connect() as connection:
            heads = await connection.run_sync(_database_heads, schema)
    finally:
        await engine.dispose()
    return heads[0] if heads else None


async def check_revision(url: str | URL, schema: str | None = None) -> str:
    """Return the database's revision if it is exactly the code's head; otherwise raise
    SchemaTooNew (migrated by newer code) or SchemaTooOld (needs ``upgrade``). Writes
    nothing: for nodes that must not migrate, and for readiness checks."""
    if problem := sqlite_directory_problem(url):
        raise StoreUnavailable(f"check_revision: {problem}")
    engine = create_engine(url, schema=schema, pooled=False, statement_timeout=None)
    try:
        async with translated_errors("check_revision"), engine.connect() as connection:
            await connection.run_sync(verify_revision, schema, allow_older=False)
    finally:
        await engine.dispose()
    return head_revision()
