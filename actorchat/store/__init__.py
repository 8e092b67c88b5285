"""Durable storage for actorchat: users, stored mail, dedupe memory, presence.

Plain asyncio (SQLAlchemy Core on asyncpg or aiosqlite); the store actor runs it on its own
loop in its own thread. Schema changes are Alembic revisions in ``actorchat/migrations``.
"""

from ._engine import create_engine as create_engine
from ._engine import normalize_url as normalize_url
from ._errors import SchemaMismatch as SchemaMismatch
from ._errors import SchemaTooNew as SchemaTooNew
from ._errors import SchemaTooOld as SchemaTooOld
from ._errors import StoreClosed as StoreClosed
from ._errors import StoreError as StoreError
from ._errors import StoreIntegrityError as StoreIntegrityError
from ._errors import StoreUnavailable as StoreUnavailable
from ._migrate import check_revision as check_revision
from ._migrate import current_revision as current_revision
from ._migrate import head_revision as head_revision
from ._migrate import upgrade as upgrade
from ._rows import BatchResult as BatchResult
from ._rows import DedupeRow as DedupeRow
from ._rows import MailRow as MailRow
from ._rows import StoreBatch as StoreBatch
from ._store import Store as Store

__all__ = [
    "BatchResult",
    "DedupeRow",
    "MailRow",
    "SchemaMismatch",
    "SchemaTooNew",
    "SchemaTooOld",
    "Store",
    "StoreBatch",
    "StoreClosed",
    "StoreError",
    "StoreIntegrityError",
    "StoreUnavailable",
    "check_revision",
    "create_engine",
    "current_revision",
    "head_revision",
    "normalize_url",
    "upgrade",
]
