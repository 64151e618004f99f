"""login_attempts counts registrations per address too: the scope 'register_ip'

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check", "login_attempts", "scope IN ('email', 'ip', 'register_ip')"
    )


def downgrade() -> None:
    # The narrower constraint would refuse the registration counters; they are only counters,
    # so dropping them costs at most one window's limit.
    op.execute("DELETE FROM login_attempts WHERE scope = 'register_ip'")
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check", "login_attempts", "scope IN ('email', 'ip')"
    )
