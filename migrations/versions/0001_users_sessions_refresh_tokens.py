"""users, sessions and refresh_tokens

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

REVOKE_REASONS = (
    "logout",
    "logout_all",
    "password_change",
    "reuse_detected",
    "user_disabled",
    "user_revoked",
    "admin",
)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    default = None if nullable else sa.text("now()")
    return sa.Column(name, sa.TIMESTAMP(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", postgresql.UUID(), server_default=sa.text("gen_random_uuid()")),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("disabled_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="users_pkey"),
        sa.CheckConstraint("length(email) <= 320", name="users_email_length_check"),
    )
    # Emails are unique regardless of case: Alice@x and alice@x are one account.
    op.create_index("users_email_lower_key", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "sessions",
        sa.Column("id", postgresql.UUID(), server_default=sa.text("gen_random_uuid()")),
        sa.Column("user_id", postgresql.UUID(), nullable=False),
        _timestamp("created_at"),
        _timestamp("last_used_at"),
        # The absolute end of the session: rotation never moves it.
        sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
        _timestamp("revoked_at", nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="sessions_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="sessions_user_id_fkey", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "revoke_reason IS NULL OR revoke_reason IN ("
            + ", ".join(f"'{reason}'" for reason in REVOKE_REASONS)
            + ")",
            name="sessions_revoke_reason_check",
        ),
        sa.CheckConstraint(
            "(revoked_at IS NULL) = (revoke_reason IS NULL)", name="sessions_revoked_check"
        ),
    )
    op.create_index("sessions_user_id_idx", "sessions", ["user_id"])
    op.create_index("sessions_expires_at_idx", "sessions", ["expires_at"])

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True)),
        sa.Column("session_id", postgresql.UUID(), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        # SHA-256 of the token; the token itself is never stored.
        sa.Column("token_digest", postgresql.BYTEA(), nullable=False),
        sa.Column("issued_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
        _timestamp("used_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="refresh_tokens_pkey"),
        sa.UniqueConstraint("token_digest", name="refresh_tokens_token_digest_key"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="refresh_tokens_session_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["refresh_tokens.id"],
            name="refresh_tokens_parent_id_fkey",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint("octet_length(token_digest) = 32", name="refresh_tokens_digest_check"),
    )
    # At most one child per token: the database itself forbids a second rotation.
    op.create_index(
        "refresh_tokens_parent_id_key",
        "refresh_tokens",
        ["parent_id"],
        unique=True,
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.create_index("refresh_tokens_session_id_idx", "refresh_tokens", ["session_id"])
    op.create_index("refresh_tokens_expires_at_idx", "refresh_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_table("sessions")
    op.drop_table("users")
