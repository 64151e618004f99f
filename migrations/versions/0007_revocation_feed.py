"""the revocation feed (filled by triggers) and session policy columns

Every revocation, whichever path made it, lands in `revocations` through triggers: a session's
`revoked_at` going from NULL to a time, the DELETE of a session still live (an erased user's, by
cascade), and a client access token's row in `revoked_access_tokens`. Each trigger first takes a
transaction-level advisory lock, so the feed's ids are handed out in commit order (see
tokenrota_server/revocations.py), and sends a NOTIFY that wakes long polls.

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_REVOKE_REASONS = (
    "logout",
    "logout_all",
    "password_change",
    "reuse_detected",
    "user_disabled",
    "user_revoked",
    "admin",
    "password_reset",  # 0005
)
NEW_REVOKE_REASONS = ("idle", "session_limit")
MAX_SESSION_NAME_LENGTH = 100
# The advisory lock that orders feed writes; tokenrota_server.revocations.FEED_LOCK_KEY.
FEED_LOCK_KEY = 0x7265766F_66656564  # "revofeed"

_FEED_TABLE = """
CREATE TABLE revocations (
    id bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT revocations_pkey PRIMARY KEY,
    session_id uuid,
    jti text,
    revoked_at timestamptz NOT NULL,
    -- A client token's exp; NULL for a session (its tokens end ACCESS_TOKEN_TTL after it).
    expires_at timestamptz,
    CONSTRAINT revocations_kind_check
        CHECK ((session_id IS NULL) <> (jti IS NULL) AND (jti IS NULL) = (expires_at IS NULL))
)
"""

_FEED_FUNCTIONS = (
    """
CREATE FUNCTION revocations_from_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Held until commit: the next revoking transaction draws its ids only after this one is
    -- visible, so a reader never sees a higher id without every lower one.
    PERFORM pg_advisory_xact_lock(%(lock)d);
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO revocations (session_id, revoked_at) VALUES (NEW.id, NEW.revoked_at);
    ELSE
        INSERT INTO revocations (session_id, revoked_at) VALUES (OLD.id, now());
    END IF;
    -- One payload for all: Postgres folds a transaction's identical notifications.
    PERFORM pg_notify('tokenrota_revocations', '');
    RETURN NULL;
END $$
""",
    """
CREATE FUNCTION revocations_from_access_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(%(lock)d);
    INSERT INTO revocations (jti, revoked_at, expires_at)
    VALUES (NEW.jti, NEW.revoked_at, NEW.expires_at);
    PERFORM pg_notify('tokenrota_revocations', '');
    RETURN NULL;
END $$
""",
)

_FEED_TRIGGERS = (
    "CREATE TRIGGER sessions_revoked_feed AFTER UPDATE OF revoked_at ON sessions FOR EACH ROW"
    " WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)"
    " EXECUTE FUNCTION revocations_from_sessions()",
    # A live session deleted (a user erased): its access tokens must stop as a revoked one's.
    "CREATE TRIGGER sessions_deleted_feed AFTER DELETE ON sessions FOR EACH ROW"
    " WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())"
    " EXECUTE FUNCTION revocations_from_sessions()",
    "CREATE TRIGGER revoked_access_tokens_feed AFTER INSERT ON revoked_access_tokens"
    " FOR EACH ROW EXECUTE FUNCTION revocations_from_access_tokens()",
)


def _reason_check(reasons: tuple[str, ...]) -> str:
    return (
        "revoke_reason IS NULL OR revoke_reason IN (" + ", ".join(f"'{r}'" for r in reasons) + ")"
    )


def upgrade() -> None:
    op.execute(_FEED_TABLE)
    op.create_index("revocations_revoked_at_idx", "revocations", ["revoked_at"])
    functions = [function % {"lock": FEED_LOCK_KEY} for function in _FEED_FUNCTIONS]
    for statement in (*functions, *_FEED_TRIGGERS):
        op.execute(statement)

    op.add_column("sessions", sa.Column("name", sa.Text(), nullable=True))
    op.create_check_constraint(
        "sessions_name_length_check", "sessions", f"length(name) <= {MAX_SESSION_NAME_LENGTH}"
    )
    # false: a short session from `remember: false`, whose refresh cookie has no Max-Age.
    op.add_column(
        "sessions",
        sa.Column("remember", sa.Boolean(), nullable=False, server_default=sa.text("true")),
    )
    op.drop_constraint("sessions_revoke_reason_check", "sessions", type_="check")
    op.create_check_constraint(
        "sessions_revoke_reason_check",
        "sessions",
        _reason_check(OLD_REVOKE_REASONS + NEW_REVOKE_REASONS),
    )


def downgrade() -> None:
    # The older constraint does not know the new reasons; those sessions stay revoked, as 'admin'.
    op.execute(
        "UPDATE sessions SET revoke_reason = 'admin'"
        " WHERE revoke_reason IN ('idle', 'session_limit')"
    )
    op.drop_constraint("sessions_revoke_reason_check", "sessions", type_="check")
    op.create_check_constraint(
        "sessions_revoke_reason_check", "sessions", _reason_check(OLD_REVOKE_REASONS)
    )
    op.drop_column("sessions", "remember")
    op.drop_constraint("sessions_name_length_check", "sessions", type_="check")
    op.drop_column("sessions", "name")
    op.execute("DROP TRIGGER revoked_access_tokens_feed ON revoked_access_tokens")
    op.execute("DROP TRIGGER sessions_deleted_feed ON sessions")
    op.execute("DROP TRIGGER sessions_revoked_feed ON sessions")
    op.drop_table("revocations")
    op.execute("DROP FUNCTION revocations_from_access_tokens()")
    op.execute("DROP FUNCTION revocations_from_sessions()")
