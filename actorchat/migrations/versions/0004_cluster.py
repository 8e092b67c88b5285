"""Cluster membership leases (issue 6).

Placeholder revision: empty until its feature fills it in. Keeps the revision chain linear
while the features are built side by side.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
