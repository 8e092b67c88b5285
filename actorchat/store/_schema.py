"""The tables, in SQLAlchemy Core, shared by SQLite and PostgreSQL.

This is the code's picture of the schema; the database gets it only through Alembic revisions
in ``actorchat/migrations/versions`` (``test_store_migrate.py`` checks the two agree).

Access paths, so each is cheap on both dialects:

- ``mail``: fetch a recipient's mail in key order and delete one (recipient, key) walk the
  primary key. On SQLite the table is WITHOUT ROWID, so that B-tree *is* the table.
- ``dedupe``: lookup by (sender, client_id, recipient) is the primary key; a recipient's recent
  entries use ``ix_dedupe_recipient_created_at``; pruning by age uses ``ix_dedupe_created_at``
  (without it, every prune would scan the whole table).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from ._rows import CLIENT_ID_MAX, NAME_MAX

# Named constraints: SQLite's batch migrations need names to alter them later.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

users = Table(
    "users",
    metadata,
    Column("name", String(NAME_MAX), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    PrimaryKeyConstraint("name"),
)

mail = Table(
    "mail",
    metadata,
    Column("recipient", String(NAME_MAX), nullable=False),
    Column("key", BigInteger, nullable=False, autoincrement=False),
    Column("sender", String(NAME_MAX), nullable=False),
    Column("client_id", String(CLIENT_ID_MAX), nullable=False),
    Column("body", Text, nullable=False),
    Column("ts", Double, nullable=False),  # acceptance time, seconds since the epoch
    Column("grp", String(NAME_MAX), nullable=True),
    Column("media", Text, nullable=True),  # JSON text, opaque here
    PrimaryKeyConstraint("recipient", "key"),
    sqlite_with_rowid=False,
)

dedupe = Table(
    "dedupe",
    metadata,
    Column("sender", String(NAME_MAX), nullable=False),
    Column("client_id", String(CLIENT_ID_MAX), nullable=False),
    Column("recipient", String(NAME_MAX), nullable=False),
    Column("key", BigInteger, nullable=False),
    Column("created_at", Double, nullable=False),
    PrimaryKeyConstraint("sender", "client_id", "recipient"),
    Index(None, "recipient", "created_at"),
    Index(None, "created_at"),
    sqlite_with_rowid=False,
)

last_seen = Table(
    "last_seen",
    metadata,
    Column("name", String(NAME_MAX), nullable=False),
    Column("ts", Double, nullable=False),
    PrimaryKeyConstraint("name"),
)

MAIL_COLUMNS = ("recipient", "key", "sender", "client_id", "body", "ts", "grp", "media")
DEDUPE_COLUMNS = ("sender", "client_id", "recipient", "key", "created_at")
