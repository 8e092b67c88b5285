"""Alembic environment for actorchat's schema.

Normally run by ``actorchat.store.upgrade``, which opens an async engine, takes a lock,
checks the database's revision, and hands the sync view of its connection in via
``config.attributes["connection"]`` (``AsyncConnection.run_sync``); the revisions then run in
that caller's transaction. ``config.attributes["schema"]`` names the PostgreSQL schema that
holds the tables and the ``alembic_version`` table.

Run any other way (the ``alembic`` command with ``sqlalchemy.url`` set), it opens its own
async engine for that URL. Offline (``--sql``) mode is not supported.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from actorchat.store._engine import create_engine
from actorchat.store._schema import metadata

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=config.attributes.get("schema"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    engine = create_engine(url, schema=config.attributes.get("schema"), pooled=False,
                           statement_timeout=None)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("actorchat migrations need a database connection (no --sql mode)")
elif (shared := config.attributes.get("connection")) is not None:
    run_migrations(shared)
else:
    asyncio.run(run_with_own_engine(config.get_main_option("sqlalchemy.url") or ""))
