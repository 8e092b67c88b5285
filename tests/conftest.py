"""Fixtures shared by the whole test suite.

``pg_url`` (session scope) gives a PostgreSQL database to test against, as a
``PgTarget(url, schema)``: ``url`` is a ``postgresql+asyncpg://`` URL and ``schema`` a fresh
``actorchat_test_<random>`` schema, created for this session and dropped at its end (with
any ``<schema>_<suffix>`` schemas tests made), so concurrent runs on one server never
collide. Pass both on, e.g.
``await Store.open(pg_url.url, schema=pg_url.schema)``; tests sharing the session schema
must clean up after themselves.

The server is ``$ACTORCHAT_TEST_PG_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). If it cannot be reached, tests using
``pg_url`` are skipped, or fail when ``ACTORCHAT_REQUIRE_POSTGRES=1`` (as in CI).
Mark such tests ``@pytest.mark.postgres``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import asyncpg
import pytest
from sqlalchemy.engine import make_url

# pytest's default (prepend) import mode puts this directory on sys.path to import this file,
# and then tests/actorchat and tests/supervisors shadow the real packages as namespace
# packages. With the project root on sys.path the real (regular) packages win. Same effect as
# `pythonpath = ["."]` under [tool.pytest.ini_options].
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PG_URL_ENV = "ACTORCHAT_TEST_PG_URL"
REQUIRE_PG_ENV = "ACTORCHAT_REQUIRE_POSTGRES"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


class PgTarget(NamedTuple):
    url: str
    schema: str


async def _pg_admin(url: str, sql: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[PgTarget]:
    url = os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)
    schema = f"actorchat_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_pg_admin(url, f"CREATE SCHEMA {schema}"))
    except Exception as error:  # any failure here means "no usable server", whatever it is
        shown = make_url(url).render_as_string(hide_password=True)
        message = (
            f"PostgreSQL at {shown} is not usable ({type(error).__name__}: {error}); "
            f"set {PG_URL_ENV} to a postgresql+asyncpg:// URL of a server where you may "
            f"create schemas"
        )
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_PG_ENV}=1 requires it)", pytrace=False)
        pytest.skip(message)
    try:
        yield PgTarget(url, schema)
    finally:
        asyncio.run(_drop_schemas(url, schema))


async def _drop_schemas(url: str, schema: str) -> None:
    # Also the schemas tests named after this one (``<schema>_<suffix>``), should a test
    # have been interrupted before dropping its own.
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        names = await connection.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = $1 OR starts_with(nspname, $2)",
            schema, schema + "_",
        )
        for (name,) in names:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()
