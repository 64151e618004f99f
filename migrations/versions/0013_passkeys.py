"""Passkeys: each WebAuthn credential of a passkey factor, and the challenges handed out

A passkey factor is a row of `mfa_factors` (type `passkey`); its credential (id, public key,
signature counter) lives here, one per factor. A challenge is kept as its digest until it is
spent once or expires, so a replayed assertion finds nothing to spend.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE passkey_credentials ("
        " factor_id uuid PRIMARY KEY REFERENCES mfa_factors (id) ON DELETE CASCADE,"
        " user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
        " credential_id bytea NOT NULL UNIQUE,"
        " public_key bytea NOT NULL,"
        " sign_count bigint NOT NULL CHECK (sign_count >= 0),"
        # Backup eligible: a synced passkey (amr "swk") rather than one bound to a device ("hwk").
        " backup_eligible boolean NOT NULL,"
        " transports text[] NOT NULL DEFAULT '{}')"
    )
    op.execute("CREATE INDEX passkey_credentials_user_id_idx ON passkey_credentials (user_id)")
    op.execute(
        "CREATE TABLE webauthn_challenges ("
        " challenge_digest bytea PRIMARY KEY,"
        " purpose text NOT NULL CHECK (purpose IN ('register', 'authenticate')),"
        " user_id uuid REFERENCES users (id) ON DELETE CASCADE,"
        " expires_at timestamptz NOT NULL,"
        " used_at timestamptz)"
    )
    op.execute(
        "CREATE INDEX webauthn_challenges_expires_at_idx ON webauthn_challenges (expires_at)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE webauthn_challenges")
    op.execute("DROP TABLE passkey_credentials")
