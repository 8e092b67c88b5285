"""The tables, in SQLAlchemy Core, shared by SQLite and PostgreSQL.

This is the code's picture of the schema; the database gets it only through Alembic revisions
in ``actorchat/migrations/versions`` (``test_store_migrate.py`` checks the two agree).

Access paths, so each is cheap on both dialects:

- ``mail``: fetch a recipient's mail in key order and delete one (recipient, key) walk the
  primary key. On SQLite the table is WITHOUT ROWID, so that B-tree *is* the table.
- ``dedupe``: lookup by (sender, client_id, recipient) is the primary key; a recipient's recent
  entries use ``ix_dedupe_recipient_created_at``; pruning by age uses ``ix_dedupe_created_at``
  (without it, every prune would scan the whole table).
- ``group_members``: a group's members walk the primary key (grp, member); a user's groups
  (sent on every welcome) use ``ix_group_members_member``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
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

groups = Table(
    "chat_groups",
    metadata,
    Column("id", String(NAME_MAX), nullable=False),
    Column("name", Text, nullable=False),
    Column("owner", String(NAME_MAX), nullable=False),
    Column("created_at", Double, nullable=False),
    PrimaryKeyConstraint("id"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("grp", String(NAME_MAX), nullable=False),
    Column("member", String(NAME_MAX), nullable=False),
    Column("joined_at", Double, nullable=False),
    PrimaryKeyConstraint("grp", "member"),
    Index(None, "member"),
    sqlite_with_rowid=False,
)

# Cluster (issue 6): membership leases and mailbox ownership, see actorchat/cluster.
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("name", String(NAME_MAX), nullable=False),
    Column("incarnation", BigInteger, nullable=False),
    Column("address", Text, nullable=False),
    Column("proof", Text, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("lease_expires", Double, nullable=False),  # database clock, seconds since the epoch
    Column("users", Integer, nullable=False),
    PrimaryKeyConstraint("name"),
)

cluster_owners = Table(
    "cluster_owners",
    metadata,
    Column("name", String(NAME_MAX), nullable=False),
    Column("node", String(NAME_MAX), nullable=False),
    Column("incarnation", BigInteger, nullable=False),
    Column("since", Double, nullable=False),
    PrimaryKeyConstraint("name"),
    Index(None, "node"),
)

cluster_relay = Table(
    "cluster_relay",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("origin", String(NAME_MAX), nullable=False),
    Column("recipient", String(NAME_MAX), nullable=False),
    Column("sender", String(NAME_MAX), nullable=False),
    Column("client_id", String(CLIENT_ID_MAX), nullable=False),
    Column("body", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Column("grp", String(NAME_MAX), nullable=True),
    Column("media", Text, nullable=True),
    Index(None, "recipient", "id"),
    Index(None, "origin", "recipient"),
)

# Media (issue 7): one row per upload (a random id, not the hash: knowing the bytes grants
# nothing), and who may fetch it (the uploader, the recipients of messages referring to it).
# "May this user fetch M" is one primary-key lookup of media_access; ix_media_sha256 finds the
# uploads sharing a blob (for a sweep of unreferenced blobs).
MEDIA_ID_MAX = 64
SHA256_HEX = 64
MIME_MAX = 255

media = Table(
    "media",
    metadata,
    Column("id", String(MEDIA_ID_MAX), nullable=False),
    Column("sha256", String(SHA256_HEX), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mime", String(MIME_MAX), nullable=False),
    Column("owner", String(NAME_MAX), nullable=False),
    Column("created_at", Double, nullable=False),
    PrimaryKeyConstraint("id"),
    Index(None, "sha256"),
)

media_access = Table(
    "media_access",
    metadata,
    Column("media_id", String(MEDIA_ID_MAX), nullable=False),
    Column("user_name", String(NAME_MAX), nullable=False),
    PrimaryKeyConstraint("media_id", "user_name"),
    sqlite_with_rowid=False,
)

MAIL_COLUMNS = ("recipient", "key", "sender", "client_id", "body", "ts", "grp", "media")
DEDUPE_COLUMNS = ("sender", "client_id", "recipient", "key", "created_at")
