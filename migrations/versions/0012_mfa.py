"""Second factors: TOTP and passkey factors, recovery codes, mfa tokens, the login's strength

`mfa_factors` holds every kind of factor (a passkey's credential lives in a table of its own
that references its factor); a factor counts only once verified. Sessions keep how their login
was made (`amr`, `acr`, `auth_time`): a refresh copies them, only a step-up raises them. A role
may require the stronger login (`require_mfa`). The throttle counts wrong codes per user and
per mfa token.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

THROTTLE_SCOPES = ("email", "ip", "register_ip", "forgot_email", "forgot_ip")
MFA_SCOPES = ("mfa_user", "mfa_token")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    op.execute(
        "CREATE TABLE mfa_factors ("
        " id uuid PRIMARY KEY,"
        " user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
        " type text NOT NULL CHECK (type IN ('totp', 'passkey')),"
        " name text NOT NULL,"
        " created_at timestamptz NOT NULL,"
        " last_used_at timestamptz,"
        " verified_at timestamptz,"
        # AES-GCM: a 12-byte nonce, then the ciphertext and its tag; the factor id is the AAD.
        " secret_ciphertext bytea,"
        # The TOTP time step last accepted: a code of that step or an earlier one is refused.
        " last_step bigint,"
        " CHECK ((type = 'totp') = (secret_ciphertext IS NOT NULL)))"
    )
    op.execute("CREATE INDEX mfa_factors_user_id_idx ON mfa_factors (user_id)")
    op.execute(
        "CREATE TABLE mfa_recovery_codes ("
        " user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
        " code_digest bytea NOT NULL,"
        " created_at timestamptz NOT NULL,"
        " used_at timestamptz,"
        " PRIMARY KEY (user_id, code_digest))"
    )
    op.execute(
        "CREATE TABLE mfa_tokens ("
        " token_digest bytea PRIMARY KEY,"
        " user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
        " created_at timestamptz NOT NULL,"
        " expires_at timestamptz NOT NULL,"
        " used_at timestamptz,"
        " remember boolean NOT NULL DEFAULT true)"
    )
    op.execute("CREATE INDEX mfa_tokens_user_id_idx ON mfa_tokens (user_id)")
    op.execute("CREATE INDEX mfa_tokens_expires_at_idx ON mfa_tokens (expires_at)")
    op.execute("ALTER TABLE sessions ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}'")
    op.execute(
        "ALTER TABLE sessions ADD COLUMN acr text NOT NULL DEFAULT 'aal1'"
        " CHECK (acr IN ('aal1', 'aal2'))"
    )
    op.execute("ALTER TABLE sessions ADD COLUMN auth_time timestamptz")
    op.execute("UPDATE sessions SET auth_time = created_at")
    # The service always names it; the default serves rows written by hand (tools, tests).
    op.execute(
        "ALTER TABLE sessions ALTER COLUMN auth_time SET NOT NULL,"
        " ALTER COLUMN auth_time SET DEFAULT now()"
    )
    op.execute("ALTER TABLE roles ADD COLUMN require_mfa boolean NOT NULL DEFAULT false")
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check", "login_attempts", _in("scope", THROTTLE_SCOPES + MFA_SCOPES)
    )


def downgrade() -> None:
    op.execute("DELETE FROM login_attempts WHERE " + _in("scope", MFA_SCOPES))
    op.drop_constraint("login_attempts_scope_check", "login_attempts", type_="check")
    op.create_check_constraint(
        "login_attempts_scope_check", "login_attempts", _in("scope", THROTTLE_SCOPES)
    )
    op.execute("ALTER TABLE roles DROP COLUMN require_mfa")
    op.execute("ALTER TABLE sessions DROP COLUMN auth_time")
    op.execute("ALTER TABLE sessions DROP COLUMN acr")
    op.execute("ALTER TABLE sessions DROP COLUMN amr")
    op.execute("DROP TABLE mfa_tokens")
    op.execute("DROP TABLE mfa_recovery_codes")
    op.execute("DROP TABLE mfa_factors")
