"""Media: blobs and who may fetch them (issue 7).

``media`` is one upload: a random id (not the content hash, so knowing the bytes grants
nothing), the blob's sha256 and size, the uploader's Content-Type, the uploader. ``media_access``
is who may fetch it: the uploader, and every recipient of an accepted message referring to it.
Several uploads of the same bytes are several ``media`` rows sharing one blob.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mime", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_media"),
    )
    op.create_index("ix_media_sha256", "media", ["sha256"])
    op.create_table(
        "media_access",
        sa.Column("media_id", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("media_id", "user_name", name="pk_media_access"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("media_access")
    op.drop_index("ix_media_sha256", table_name="media")
    op.drop_table("media")
