"""Cluster: membership leases and mailbox ownership (issue 6).

``cluster_nodes``: one row per node name, renewed by its node every lease/4 seconds; a node
whose ``lease_expires`` (database clock, seconds since the epoch) is past is down. The
``incarnation`` changes at every start, so a node that comes back is a new member.

``cluster_owners``: which node (and which incarnation of it) owns each user's mailbox. An
owner row whose (node, incarnation) is not a live member is free to claim.

``cluster_relay``: mail that could not cross a link (cut, or the owner died), stored by the
sender's node for the recipient's owner to take in ``id`` order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("incarnation", sa.BigInteger, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("proof", sa.Text, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("lease_expires", sa.Double, nullable=False),
        sa.Column("users", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_nodes"),
    )
    op.create_table(
        "cluster_owners",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("incarnation", sa.BigInteger, nullable=False),
        sa.Column("since", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_owners"),
    )
    op.create_index("ix_cluster_owners_node", "cluster_owners", ["node"])
    op.create_table(
        "cluster_relay",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("grp", sa.String(64), nullable=True),
        sa.Column("media", sa.Text, nullable=True),
    )
    op.create_index("ix_cluster_relay_recipient_id", "cluster_relay", ["recipient", "id"])
    op.create_index("ix_cluster_relay_origin_recipient", "cluster_relay", ["origin", "recipient"])


def downgrade() -> None:
    op.drop_index("ix_cluster_relay_origin_recipient", table_name="cluster_relay")
    op.drop_index("ix_cluster_relay_recipient_id", table_name="cluster_relay")
    op.drop_table("cluster_relay")
    op.drop_index("ix_cluster_owners_node", table_name="cluster_owners")
    op.drop_table("cluster_owners")
    op.drop_table("cluster_nodes")
