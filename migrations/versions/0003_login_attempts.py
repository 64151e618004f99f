"""login_attempts, the login throttle's counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per throttled key and window. The key is a SHA-256 (of the lowercased email, or
    # of the client address), so the table never holds an email that has no account.
    op.create_table(
        "login_attempts",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("key_digest", postgresql.BYTEA(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key_digest", name="login_attempts_pkey"),
        sa.CheckConstraint("scope IN ('email', 'ip')", name="login_attempts_scope_check"),
        sa.CheckConstraint("octet_length(key_digest) = 32", name="login_attempts_key_digest_check"),
    )
    op.create_index("login_attempts_window_started_at_idx", "login_attempts", ["window_started_at"])


def downgrade() -> None:
    op.drop_table("login_attempts")
