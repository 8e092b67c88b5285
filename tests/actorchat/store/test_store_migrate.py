"""Migrations: from empty to head on both dialects, agreement with ``_schema``, and the
refusal to touch a schema newer than the code (``SchemaTooNew``)."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from actorchat.store import (
    SchemaTooNew,
    SchemaTooOld,
    Store,
    check_revision,
    create_engine,
    current_revision,
    head_revision,
    upgrade,
)
from actorchat.store._migrate import _script
from actorchat.store._schema import metadata

FUTURE = "ffff_from_the_future"


def test_revisions_are_one_line_ending_in_head() -> None:
    script = _script()
    assert script.get_heads() == [head_revision()]
    revisions = [s.revision for s in script.walk_revisions()]  # head first
    assert revisions[-1] == "0001"
    assert revisions == sorted(revisions, reverse=True)  # numbered in order, no branches


def test_upgrade_from_empty(empty_db) -> None:
    assert asyncio.run(current_revision(empty_db.url, empty_db.schema)) is None
    assert asyncio.run(upgrade(empty_db.url, empty_db.schema)) == head_revision()
    assert asyncio.run(current_revision(empty_db.url, empty_db.schema)) == head_revision()
    core = {"users", "mail", "dedupe", "last_seen"}
    # Every table of the schema module (the core ones and the features': groups, media, ...).
    assert core <= set(metadata.tables)
    assert empty_db.table_names() == {"alembic_version", *metadata.tables}
    # A second run (every node start does one) is a no-op.
    assert asyncio.run(upgrade(empty_db.url, empty_db.schema)) == head_revision()


def test_migrations_match_schema_module(empty_db) -> None:
    asyncio.run(upgrade(empty_db.url, empty_db.schema))

    def diff(connection):
        context = MigrationContext.configure(connection)
        return compare_metadata(context, metadata)

    async def main():
        engine = create_engine(empty_db.url, schema=empty_db.schema, pooled=False)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(diff)
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == []


def test_concurrent_upgrades_both_succeed(empty_db) -> None:
    # Nodes starting together: the lock makes one wait and then find head.
    async def main():
        return await asyncio.gather(*(upgrade(empty_db.url, empty_db.schema) for _ in range(3)))

    assert asyncio.run(main()) == [head_revision()] * 3


def _stamp_future(db) -> None:
    db.sql(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        f"INSERT INTO alembic_version VALUES ('{FUTURE}')",
    )


def test_schema_too_new_refuses_and_writes_nothing(empty_db) -> None:
    _stamp_future(empty_db)
    for attempt in (
        lambda: asyncio.run(upgrade(empty_db.url, empty_db.schema)),
        lambda: empty_db.run(lambda store: asyncio.sleep(0)),
        lambda: empty_db.run(lambda store: asyncio.sleep(0), migrate=False),
        lambda: asyncio.run(check_revision(empty_db.url, empty_db.schema)),
    ):
        with pytest.raises(SchemaTooNew) as caught:
            attempt()
        assert FUTURE in str(caught.value) and head_revision() in str(caught.value)
        assert (caught.value.database_revision, caught.value.code_revision) == (
            FUTURE, head_revision())
    assert empty_db.table_names() == {"alembic_version"}
    assert empty_db.sql("SELECT version_num FROM alembic_version") == [[(FUTURE,)]]


def test_open_without_migrating_refuses_an_old_schema(empty_db) -> None:
    with pytest.raises(SchemaTooOld) as caught:
        empty_db.run(lambda store: asyncio.sleep(0), migrate=False)
    assert caught.value.database_revision is None
    assert empty_db.table_names() <= {"alembic_version"}
    asyncio.run(upgrade(empty_db.url, empty_db.schema))
    assert asyncio.run(check_revision(empty_db.url, empty_db.schema)) == head_revision()
    empty_db.run(Store.ping, migrate=False)
