"""Groups and their members (issue 7).

``chat_groups``: one row per group (its server-chosen id, name, owner). ``group_members``: one row
per membership; the primary key (grp, member) serves a group's member list, and
``ix_group_members_member`` the groups of one user (sent on every welcome).

Written out in full rather than imported from ``actorchat.store._schema`` (see 0001).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_groups",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chat_groups"),
    )
    op.create_table(
        "group_members",
        sa.Column("grp", sa.String(64), nullable=False),
        sa.Column("member", sa.String(64), nullable=False),
        sa.Column("joined_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("grp", "member", name="pk_group_members"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_group_members_member", "group_members", ["member"])


def downgrade() -> None:
    op.drop_index("ix_group_members_member", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("chat_groups")
