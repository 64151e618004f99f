"""login_attempts counts passkey request options per address too: the scope 'passkey_options_ip'

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

SCOPES_BEFORE = (
    "email",
    "ip",
    "register_ip",
    "forgot_email",
    "forgot_ip",
    "mfa_user",
    "mfa_token",
)
SCOPES_AFTER = (*SCOPES_BEFORE, "passkey_options_ip")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check", "login_attempts", _in("scope", SCOPES_AFTER)
    )


def downgrade() -> None:
    # Only counters: dropping them costs at most one window's limit.
    op.execute("DELETE FROM login_attempts WHERE scope = 'passkey_options_ip'")
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check", "login_attempts", _in("scope", SCOPES_BEFORE)
    )
