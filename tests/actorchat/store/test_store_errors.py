"""Which failures count as "the database is unavailable" (retry later) and which do not.
Pure: exceptions are built by hand, as the drivers would raise them."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from actorchat.store import StoreIntegrityError, StoreUnavailable
from actorchat.store._errors import is_unavailable, translated_errors


class DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def dbapi(cls: type[sa_exc.DBAPIError], sqlstate: str | None = None, **kw) -> Exception:
    return cls("SELECT 1", None, DriverError(sqlstate), **kw)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        OSError(101, "network unreachable"),
        dbapi(sa_exc.OperationalError),  # SQLite: database is locked, disk I/O error
        dbapi(sa_exc.InterfaceError),  # asyncpg: connection is closed
        dbapi(sa_exc.DBAPIError, connection_invalidated=True),
        dbapi(sa_exc.DBAPIError, "57P01"),  # admin_shutdown
        dbapi(sa_exc.DBAPIError, "57014"),  # query_canceled by statement_timeout
        dbapi(sa_exc.DBAPIError, "53300"),  # too_many_connections
        dbapi(sa_exc.DBAPIError, "08006"),  # connection_failure
        dbapi(sa_exc.DBAPIError, "25006"),  # read-only: a standby, mid-failover
        asyncpg.exceptions.CannotConnectNowError("starting up"),
        sa_exc.TimeoutError("QueuePool limit reached"),
    ],
)
def test_outages_are_unavailable(error: Exception) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        dbapi(sa_exc.ProgrammingError, "42P01"),  # undefined table: a bug, not an outage
        dbapi(sa_exc.DataError, "22001"),  # value too long
        dbapi(sa_exc.DBAPIError, "28P01"),  # wrong password: configuration
        ValueError("x"),
    ],
)
def test_mistakes_are_not_unavailable(error: Exception) -> None:
    assert not is_unavailable(error)


async def _raise_inside(error: Exception) -> None:
    async with translated_errors("op"):
        raise error


def test_translation() -> None:
    with pytest.raises(StoreUnavailable, match=r"^op: "):
        asyncio.run(_raise_inside(ConnectionResetError()))
    with pytest.raises(StoreIntegrityError, match=r"^op: "):
        asyncio.run(_raise_inside(dbapi(sa_exc.IntegrityError, "23505")))
    with pytest.raises(sa_exc.ProgrammingError):
        asyncio.run(_raise_inside(dbapi(sa_exc.ProgrammingError, "42P01")))
