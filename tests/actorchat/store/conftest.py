"""Fixtures for the store tests: every test that takes ``db`` or ``empty_db`` runs once on
SQLite (a file in tmp_path) and once on PostgreSQL (the session schema of ``pg_url``).

The store is asyncio code and these tests are plain functions: ``db.run(body)`` opens a
Store, awaits ``body(store)`` on a fresh asyncio loop, and closes the store.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from actorchat.store import Store, create_engine, upgrade

T = TypeVar("T")
TABLES = ("users", "mail", "dedupe", "last_seen")
DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@dataclass(frozen=True)
class Db:
    """One database to test against: its URL, its PostgreSQL schema (None on SQLite)."""

    dialect: str
    url: str
    schema: str | None

    def run(self, body: Callable[[Store], Awaitable[T]], **open_options: Any) -> T:
        """Open a Store on this database, await ``body(store)``, close it; return the result."""

        async def main() -> T:
            async with await Store.open(self.url, schema=self.schema, **open_options) as store:
                return await body(store)

        return asyncio.run(main())

    def sql(self, *statements: str) -> list[list[tuple[Any, ...]]]:
        """Run raw SQL statements in one transaction; the rows each returned."""

        async def main() -> list[list[tuple[Any, ...]]]:
            engine = create_engine(self.url, schema=self.schema, pooled=False)
            try:
                async with engine.begin() as connection:
                    results = []
                    for statement in statements:
                        result = await connection.execute(text(statement))
                        results.append([tuple(r) for r in result] if result.returns_rows else [])
                    return results
            finally:
                await engine.dispose()

        return asyncio.run(main())

    def table_names(self) -> set[str]:
        if self.dialect == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = f"SELECT tablename FROM pg_tables WHERE schemaname = '{self.schema}'"
        return {name for (name,) in self.sql(query)[0]}


def _target(request: pytest.FixtureRequest, tmp_path: Path, schema_suffix: str) -> Db:
    if request.param == "sqlite":
        return Db("sqlite", f"sqlite:///{tmp_path / 'store.db'}", None)
    pg = request.getfixturevalue("pg_url")
    return Db("postgresql", pg.url, pg.schema + schema_suffix)


@pytest.fixture(params=DIALECTS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """A migrated database with empty tables (PostgreSQL: the shared session schema)."""
    target = _target(request, tmp_path, "")
    if target.dialect == "postgresql":
        asyncio.run(upgrade(target.url, target.schema))
        target.sql(*(f"DELETE FROM {table}" for table in TABLES))
    return target


@pytest.fixture(params=DIALECTS)
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A database never migrated (PostgreSQL: a fresh schema, created and then dropped)."""
    target = _target(request, tmp_path, f"_{secrets.token_hex(3)}")
    if target.dialect == "sqlite":
        yield target
        return
    admin = Db("postgresql", target.url, None)
    admin.sql(f"CREATE SCHEMA {target.schema}")
    try:
        yield target
    finally:
        admin.sql(f"DROP SCHEMA {target.schema} CASCADE")
