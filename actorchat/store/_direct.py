"""SQLite's group commit without a thread hop per statement (``Store.apply`` on SQLite).

aiosqlite runs every call (cursor, executemany, cursor close, commit, and the pool's rollback
on return) on its own worker thread and wakes the asyncio loop for each answer: five round
trips between two threads for one ``apply`` whatever its rows, ~0.8 ms of CPU on the node's
core (``benchmarks/profile_node.py --scenario paced``: the dedupe rows of acknowledged mail,
written behind at most every 10 ms, were most of the store's share). The store's loop has a
thread of its own (the store actor runs one request at a time), so ``apply`` may block it:
``DirectWriter`` writes a batch on a plain ``sqlite3`` connection to the same file, in that
thread, in one transaction. ``BEGIN IMMEDIATE`` takes the write lock first, waiting for it
up to ``busy_timeout`` like the pool's connections; the file's other writers (the pool, other
nodes on one host) take turns on SQLite's lock as before. Bounds: the lock wait is
``busy_timeout``; a disk that never answers an fsync blocks the store thread (with aiosqlite
the call was abandoned and its thread stayed blocked).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import Any

from ._engine import set_sqlite_connection_pragmas
from ._errors import StoreIntegrityError, StoreUnavailable


class DirectWriter:
    """One ``sqlite3`` connection (opened on first use) that applies batches of
    statements, each batch one transaction. Raises ``StoreUnavailable`` (locked, I/O error,
    disk full: the batch was not written, apply it again) or ``StoreIntegrityError``."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN, the transaction is the one written below.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            set_sqlite_connection_pragmas(db, self.busy_timeout_ms)  # as the engine's pool
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def apply(self, what: str, statements: Sequence[tuple[str, Sequence[tuple[Any, ...]]]]) -> None:
        """Run each ``(sql, rows)`` as an executemany, all in one transaction."""
        try:
            db = self._db or self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                self._rollback(db)
                raise
        except sqlite3.IntegrityError as error:
            raise StoreIntegrityError(f"{what}: {error}") from error
        except sqlite3.OperationalError as error:  # locked, I/O error, disk full, no file
            self.close()  # a connection that failed mid-write is not trusted again
            raise StoreUnavailable(f"{what}: {type(error).__name__}: {error}") from error

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                self.close()

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
