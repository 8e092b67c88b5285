"""The store's exceptions, and the one place that decides which database errors mean "the
database cannot be reached right now".

Hierarchy::

    StoreError
    ├── StoreUnavailable      the database did not answer, or answered "not now"; the
    │                         outcome of the call is unknown: retry it (writes are idempotent)
    ├── StoreIntegrityError   the database refused the data (a bug, not an outage)
    ├── StoreClosed           the Store was closed
    └── SchemaMismatch        the database's schema revision is not the code's
        ├── SchemaTooNew      the database has a revision this code does not know
        └── SchemaTooOld      the database is behind and migrate=False forbade upgrading
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import exc as sa_exc

# SQLSTATE classes/codes that mean "not now" rather than "wrong": connection exception (08),
# insufficient resources (53: too many connections, disk full), operator intervention
# (57: admin/crash shutdown, cannot connect now, statement timeout), system error (58),
# and a read-only transaction (25006: connected to a standby during failover).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57", "58", "25006")


class StoreError(Exception):
    """Base class of everything the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database could not be reached or timed out. Whether the call took effect is
    unknown, so callers retry the same call; every write of ``Store`` is idempotent."""


class StoreIntegrityError(StoreError):
    """The database refused the data (a constraint). Not transient: retrying will not help."""


class StoreClosed(StoreError):
    """The Store was closed."""


class SchemaMismatch(StoreError):
    """The database schema's revision is not the one this code was written for."""

    def __init__(self, message: str, database_revision: str | None, code_revision: str) -> None:
        super().__init__(message)
        self.database_revision = database_revision
        self.code_revision = code_revision


class SchemaTooNew(SchemaMismatch):
    """The database was migrated by newer code. Nothing is written: old code must not touch
    a schema it does not understand."""

    def __init__(self, database_revision: str, code_revision: str) -> None:
        super().__init__(
            f"database schema is at revision {database_revision!r}, which this version of "
            f"actorchat does not know (its newest is {code_revision!r}); run a newer "
            f"actorchat or point this one at another database",
            database_revision,
            code_revision,
        )


class SchemaTooOld(SchemaMismatch):
    """The database is behind the code and the caller asked not to migrate."""

    def __init__(self, database_revision: str | None, code_revision: str) -> None:
        super().__init__(
            f"database schema is at revision {database_revision!r} but this code needs "
            f"{code_revision!r}; run the migrations (actorchat.store.upgrade)",
            database_revision,
            code_revision,
        )


def _sqlstate(error: BaseException) -> str | None:
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database is unreachable or refusing work for now."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(
        error,
        OSError  # includes ConnectionError and TimeoutError
        | sa_exc.OperationalError  # SQLite: locked, I/O error, disk full; PG: connection
        | sa_exc.InterfaceError  # asyncpg: connection closed mid-call
        | sa_exc.TimeoutError  # waited pool_timeout for a pooled connection
        | sa_exc.DisconnectionError,
    ):
        return True
    state = _sqlstate(error)
    return state is not None and state.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


@contextlib.asynccontextmanager
async def translated_errors(what: str) -> AsyncIterator[None]:
    """Re-raise database errors inside the block as the store's own exceptions."""
    try:
        yield
    except StoreError:
        raise
    except sa_exc.IntegrityError as error:
        raise StoreIntegrityError(f"{what}: {error.orig}") from error
    except Exception as error:
        if is_unavailable(error):
            raise StoreUnavailable(f"{what}: {type(error).__name__}: {error}") from error
        raise
