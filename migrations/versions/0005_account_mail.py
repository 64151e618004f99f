"""Password reset and email verification: account tokens, the mail outbox, email_verified_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The reasons 0001 allowed, and the one a password reset adds.
REVOKE_REASONS = (
    "logout",
    "logout_all",
    "password_change",
    "reuse_detected",
    "user_disabled",
    "user_revoked",
    "admin",
)
THROTTLE_SCOPES = ("email", "ip", "register_ip")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("email_verified_at", sa.TIMESTAMP(timezone=True), nullable=True)
    )

    # A reset or verification token, known only by its SHA-256: the token itself is only ever
    # in the message (and, sealed, in the outbox until it is sent).
    op.create_table(
        "account_tokens",
        sa.Column("token_digest", postgresql.BYTEA(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("user_id", postgresql.UUID(), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("used_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_digest", name="account_tokens_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="account_tokens_user_id_fkey", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            _in("purpose", ("password_reset", "email_verification")),
            name="account_tokens_purpose_check",
        ),
        sa.CheckConstraint("octet_length(token_digest) = 32", name="account_tokens_digest_check"),
    )
    # Supersession looks up a user's tokens still open for one purpose; the cascade, by user.
    op.create_index(
        "account_tokens_user_id_purpose_idx",
        "account_tokens",
        ["user_id", "purpose"],
        postgresql_where=sa.text("used_at IS NULL AND superseded_at IS NULL"),
    )
    op.create_index("account_tokens_user_id_idx", "account_tokens", ["user_id"])
    op.create_index("account_tokens_expires_at_idx", "account_tokens", ["expires_at"])

    # Mail waiting to go out, written in the transaction of what it announces; drained by the
    # server (SELECT ... FOR UPDATE SKIP LOCKED). `text_body`/`html_body` are sealed (Fernet).
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True)),
        sa.Column("user_id", postgresql.UUID(), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        # NULL once sent or given up: nothing more to try.
        sa.Column("next_attempt_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("sent_at", sa.TIMESTAMP(timezone=True), nullable=True),
        # The kind of failure (an exception's name, an SMTP code), never a message's content.
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="mail_outbox_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="mail_outbox_user_id_fkey", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "mail_outbox_next_attempt_at_idx",
        "mail_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
    )
    op.create_index("mail_outbox_user_id_idx", "mail_outbox", ["user_id"])
    op.create_index("mail_outbox_created_at_idx", "mail_outbox", ["created_at"])

    op.drop_constraint("sessions_revoke_reason_check", "sessions", type_="check")
    op.create_check_constraint(
        "sessions_revoke_reason_check",
        "sessions",
        "revoke_reason IS NULL OR " + _in("revoke_reason", (*REVOKE_REASONS, "password_reset")),
    )
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check",
        "login_attempts",
        _in("scope", (*THROTTLE_SCOPES, "forgot_email", "forgot_ip")),
    )


def downgrade() -> None:
    # Counters only: dropping them costs at most one window's limit.
    op.execute("DELETE FROM login_attempts WHERE scope IN ('forgot_email', 'forgot_ip')")
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check", "login_attempts", _in("scope", THROTTLE_SCOPES)
    )
    # A session a reset ended stays ended; the older schema calls that a password change.
    op.execute(
        "UPDATE sessions SET revoke_reason = 'password_change'"
        " WHERE revoke_reason = 'password_reset'"
    )
    op.drop_constraint("sessions_revoke_reason_check", "sessions", type_="check")
    op.create_check_constraint(
        "sessions_revoke_reason_check",
        "sessions",
        "revoke_reason IS NULL OR " + _in("revoke_reason", REVOKE_REASONS),
    )
    op.drop_table("mail_outbox")
    op.drop_table("account_tokens")
    op.drop_column("users", "email_verified_at")
