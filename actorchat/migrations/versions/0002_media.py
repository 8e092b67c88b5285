"""Media: blobs and who may fetch them (issue 7).

Placeholder revision: empty until its feature fills it in. Keeps the revision chain linear
while the features are built side by side.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
