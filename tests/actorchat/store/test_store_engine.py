"""URL normalisation (pure) and the per-connection settings of each dialect."""

from __future__ import annotations

import pytest

from actorchat.store import create_engine, normalize_url
from actorchat.store._engine import check_schema_name


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///rel/x.db", "sqlite+aiosqlite:///rel/x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg2://h/db", "sqlite+pysqlite:///x.db", "mysql://h/db",
     "sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"],
)
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(url)


@pytest.mark.parametrize("schema", ["", "Upper", "1abc", "a-b", 'x"; drop', "a" * 64])
def test_schema_names_are_plain_identifiers(schema: str) -> None:
    with pytest.raises(ValueError):
        check_schema_name(schema)
    assert check_schema_name("actorchat_test_1f") == "actorchat_test_1f"


def test_schema_is_for_postgresql_only(tmp_path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        create_engine(f"sqlite:///{tmp_path / 'x.db'}", schema="s")


def test_connection_settings(db) -> None:
    # The durability and isolation settings the store relies on (see _engine.py).
    if db.dialect == "sqlite":
        queries = ["PRAGMA journal_mode", "PRAGMA synchronous", "PRAGMA busy_timeout"]
        expected = [[("wal",)], [(2,)], [(5000,)]]  # synchronous 2 = FULL
    else:
        queries = ["SHOW search_path", "SHOW statement_timeout", "SHOW application_name"]
        expected = [[(db.schema,)], [("5s",)], [("actorchat",)]]
    assert db.sql(*queries) == expected
