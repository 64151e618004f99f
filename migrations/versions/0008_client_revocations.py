"""a disabled client reaches the revocation feed

Until now the feed carried revoked sessions and single revoked client tokens, but not a client
disabled as a whole: its access tokens stayed good at every resource server that checks tokens
locally until they expired. A trigger on `clients` now adds a `revocations` row naming the client
when its `disabled_at` is set (or when a live client's row is deleted), under the same advisory
lock as the other feed triggers, so the cursor's order holds for these rows too.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The advisory lock that orders feed writes; tokenrota_server.revocations.FEED_LOCK_KEY.
FEED_LOCK_KEY = 0x7265766F_66656564  # "revofeed"

_KIND_CHECK = (
    "CHECK (num_nonnulls(session_id, jti, client_id) = 1 AND (jti IS NULL) = (expires_at IS NULL))"
)
_OLD_KIND_CHECK = (
    "CHECK ((session_id IS NULL) <> (jti IS NULL) AND (jti IS NULL) = (expires_at IS NULL))"
)

_FUNCTION = """
CREATE FUNCTION revocations_from_clients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(%(lock)d);
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO revocations (client_id, revoked_at) VALUES (NEW.client_id, NEW.disabled_at);
    ELSE
        INSERT INTO revocations (client_id, revoked_at) VALUES (OLD.client_id, now());
    END IF;
    PERFORM pg_notify('tokenrota_revocations', '');
    RETURN NULL;
END $$
"""

_TRIGGERS = (
    "CREATE TRIGGER clients_disabled_feed AFTER UPDATE OF disabled_at ON clients FOR EACH ROW"
    " WHEN (OLD.disabled_at IS NULL AND NEW.disabled_at IS NOT NULL)"
    " EXECUTE FUNCTION revocations_from_clients()",
    "CREATE TRIGGER clients_deleted_feed AFTER DELETE ON clients FOR EACH ROW"
    " WHEN (OLD.disabled_at IS NULL) EXECUTE FUNCTION revocations_from_clients()",
)


def upgrade() -> None:
    op.execute("ALTER TABLE revocations ADD COLUMN client_id text")
    op.execute("ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check")
    op.execute(f"ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check {_KIND_CHECK}")
    op.execute(_FUNCTION % {"lock": FEED_LOCK_KEY})
    for statement in _TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER clients_deleted_feed ON clients")
    op.execute("DROP TRIGGER clients_disabled_feed ON clients")
    op.execute("DROP FUNCTION revocations_from_clients()")
    # The older feed cannot say "a client": those rows go, as if they had been purged.
    op.execute("DELETE FROM revocations WHERE client_id IS NOT NULL")
    op.execute("ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check")
    op.execute(f"ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check {_OLD_KIND_CHECK}")
    op.execute("ALTER TABLE revocations DROP COLUMN client_id")
