"""Operators' API: a client's previous secret for a grace period, users' metadata, invitations

A rotated client secret keeps working until `previous_secret_expires_at`; `app_metadata` (set by
operators) and `user_metadata` (set by the user) are JSON objects; an invitation is an account
token of its own purpose; the audit log is filtered by actor and by action.

Revision ID: 0016
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_PURPOSES_BEFORE = "('password_reset', 'email_verification')"
_PURPOSES_AFTER = "('password_reset', 'email_verification', 'invitation')"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE clients ADD COLUMN previous_secret_hash text,"
        " ADD COLUMN previous_secret_expires_at timestamptz,"
        " ADD CONSTRAINT clients_previous_secret_check CHECK"
        " ((previous_secret_hash IS NULL) = (previous_secret_expires_at IS NULL))"
    )
    # Objects only; the size and depth caps are the service's (they are settings).
    op.execute(
        "ALTER TABLE users ADD COLUMN app_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " ADD COLUMN user_metadata jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " ADD CONSTRAINT users_app_metadata_check CHECK (jsonb_typeof(app_metadata) = 'object'),"
        " ADD CONSTRAINT users_user_metadata_check CHECK (jsonb_typeof(user_metadata) = 'object')"
    )
    op.execute("ALTER TABLE account_tokens DROP CONSTRAINT account_tokens_purpose_check")
    op.execute(
        "ALTER TABLE account_tokens ADD CONSTRAINT account_tokens_purpose_check"
        f" CHECK (purpose IN {_PURPOSES_AFTER})"
    )
    op.execute("CREATE INDEX audit_events_actor_idx ON audit_events (actor, id)")
    op.execute("CREATE INDEX audit_events_action_idx ON audit_events (action, id)")


def downgrade() -> None:
    op.execute("DROP INDEX audit_events_action_idx")
    op.execute("DROP INDEX audit_events_actor_idx")
    op.execute("DELETE FROM account_tokens WHERE purpose = 'invitation'")
    op.execute("ALTER TABLE account_tokens DROP CONSTRAINT account_tokens_purpose_check")
    op.execute(
        "ALTER TABLE account_tokens ADD CONSTRAINT account_tokens_purpose_check"
        f" CHECK (purpose IN {_PURPOSES_BEFORE})"
    )
    op.execute("ALTER TABLE users DROP COLUMN user_metadata, DROP COLUMN app_metadata")
    op.execute(
        "ALTER TABLE clients DROP CONSTRAINT clients_previous_secret_check,"
        " DROP COLUMN previous_secret_expires_at, DROP COLUMN previous_secret_hash"
    )
