"""Initial schema: users, mail, dedupe, last_seen.

Written out in full rather than imported from ``actorchat.store._schema``: a revision is a
record of what the schema was at that point, and must not change when the code does.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_users"),
    )
    op.create_table(
        "mail",
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("key", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("grp", sa.String(64), nullable=True),
        sa.Column("media", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("recipient", "key", name="pk_mail"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "dedupe",
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("key", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("sender", "client_id", "recipient", name="pk_dedupe"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_dedupe_recipient_created_at", "dedupe", ["recipient", "created_at"])
    op.create_index("ix_dedupe_created_at", "dedupe", ["created_at"])
    op.create_table(
        "last_seen",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_last_seen"),
    )


def downgrade() -> None:
    op.drop_table("last_seen")
    op.drop_index("ix_dedupe_created_at", table_name="dedupe")
    op.drop_index("ix_dedupe_recipient_created_at", table_name="dedupe")
    op.drop_table("dedupe")
    op.drop_table("mail")
    op.drop_table("users")
