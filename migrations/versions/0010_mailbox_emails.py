"""users.email_flagged_at: accounts stored with an email that is not one mailbox are disabled

Emails are now taken only as one RFC 5321 mailbox (`tokenrota_server.email_address`). An account
stored before with something else (an address list, a display name, a comment, an encoded word)
could have its messages delivered to other people, so this migration finds those rows and,
without rewriting a single address (which of the names is the owner's is not ours to guess):
flags them (`email_flagged_at`), disables them, ends their sessions (reason `user_disabled`),
voids their open reset and verification tokens, gives up their unsent messages, and records one
audit event each (actor `migration:0010`). An operator then erases the account or enables it
again; mail to a flagged address is refused by the mailer in any case. The check is the input
rule's ASCII part in SQL; the domain's letter case is left as stored (it names the same domain).
The downgrade drops the flag and leaves the accounts disabled.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ATEXT = "[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+"
_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# local@domain: a dot-atom, then two or more LDH labels whose last is not all digits.
_MAILBOX = f"^{_ATEXT}(\\.{_ATEXT})*@({_LABEL}\\.)+{_LABEL}$"
_NOT_ONE_MAILBOX = (
    f"NOT (email ~ '{_MAILBOX}')"
    " OR email ~ '\\.[0-9]+$'"
    " OR split_part(email, '@', 1) ~ '=\\?|\\?='"
    " OR length(split_part(email, '@', 1)) > 64"
    " OR octet_length(email) > 254"
)


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("email_flagged_at", sa.TIMESTAMP(timezone=True), nullable=True)
    )
    flagged = "SELECT id FROM users WHERE email_flagged_at IS NOT NULL"
    op.execute(
        sa.text(
            "UPDATE users SET email_flagged_at = now(), disabled_at = coalesce(disabled_at, now()),"
            f" updated_at = now() WHERE {_NOT_ONE_MAILBOX}"
        )
    )
    op.execute(
        sa.text(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = 'user_disabled'"
            f" WHERE revoked_at IS NULL AND user_id IN ({flagged})"
        )
    )
    op.execute(
        sa.text(
            "UPDATE account_tokens SET superseded_at = now()"
            " WHERE used_at IS NULL AND superseded_at IS NULL"
            f" AND user_id IN ({flagged})"
        )
    )
    op.execute(
        sa.text(
            "UPDATE mail_outbox SET next_attempt_at = NULL, text_body = '', html_body = '',"
            " last_error = 'the recipient is not one mailbox'"
            f" WHERE sent_at IS NULL AND user_id IN ({flagged})"
        )
    )
    op.execute(
        sa.text(
            "INSERT INTO audit_events (actor, action, target, user_id, details)"
            " SELECT 'migration:0010', 'user_disabled', id::text, id,"
            ' \'{"reason": "email_not_one_mailbox"}\'::jsonb'
            " FROM users WHERE email_flagged_at IS NOT NULL"
        )
    )


def downgrade() -> None:
    op.drop_column("users", "email_flagged_at")
