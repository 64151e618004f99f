"""sessions.created_seq: the order in which sessions were created, exactly

`created_at` is the injected clock's time, and two logins can share it (whole-second clocks, a
burst of logins). The session cap evicts the least recently used session and, among sessions
used at the same time, the oldest: an identity column gives that order where timestamps tie.
Existing rows are numbered in an arbitrary order, which only matters among equal timestamps.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sessions",
        sa.Column("created_seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("sessions", "created_seq")
