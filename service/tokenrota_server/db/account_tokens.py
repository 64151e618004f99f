"""SQL for `account_tokens`: the single-use tokens of reset and verification messages.

A token is 256 random bits (`secrets.token_urlsafe(32)`, 43 characters); only its SHA-256 is
stored, with its purpose, its user, its expiry and how it ended (used or superseded). Each
function takes the connection first and owns no transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from tokenrota_server.db.pool import Connection, rows_affected

TOKEN_BYTES = 32
# token_urlsafe(32): 43 characters of the base64url alphabet, no padding.
TOKEN_FORM = re.compile(r"[A-Za-z0-9_-]{43}")


class Purpose(StrEnum):
    """What a token may be used for: `account_tokens.purpose`, which a CHECK constraint lists."""

    PASSWORD_RESET = "password_reset"  # noqa: S105 - a purpose's name, not a password
    EMAIL_VERIFICATION = "email_verification"
    # An operator's invitation: spent like a reset token, at /password/reset.
    INVITATION = "invitation"


def new_token() -> tuple[str, bytes]:
    """A fresh token and its digest."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, digest_of(token)


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_well_formed(token: str) -> bool:
    """Whether `token` could be one of ours; anything else is refused before the database."""
    return TOKEN_FORM.fullmatch(token) is not None


async def supersede(
    connection: Connection, *, user_id: UUID, purpose: Purpose, now: datetime
) -> int:
    """End every open token of the user for `purpose`; return how many."""
    status = await connection.execute(
        "UPDATE account_tokens SET superseded_at = $3"
        " WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL AND superseded_at IS NULL",
        user_id,
        purpose,
        now,
    )
    return rows_affected(status)


async def void_user_tokens(connection: Connection, *, user_id: UUID, now: datetime) -> int:
    """End every open token of the user, of every purpose (a disable); return how many.

    The caller holds the user's row. A token locked meanwhile belongs to a verify or reset
    under way, which locks the user after the token: waiting for it would deadlock, so it is
    skipped (that spend, once committed, has used it up).
    """
    status = await connection.execute(
        "UPDATE account_tokens SET superseded_at = $2 WHERE token_digest IN ("
        " SELECT token_digest FROM account_tokens"
        " WHERE user_id = $1 AND used_at IS NULL AND superseded_at IS NULL"
        " FOR UPDATE SKIP LOCKED)",
        user_id,
        now,
    )
    return rows_affected(status)


async def is_open(
    connection: Connection, *, token_digest: bytes, purpose: Purpose, now: datetime
) -> bool:
    """Whether the token could be spent now (a cheap look before costly work; not a claim)."""
    found: bool = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM account_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_digest = $1 AND t.purpose = $2 AND t.used_at IS NULL"
        " AND t.superseded_at IS NULL AND t.expires_at > $3 AND u.disabled_at IS NULL)",
        token_digest,
        purpose,
        now,
    )
    return found


async def lock_user_of(connection: Connection, *, token_digest: bytes, purpose: Purpose) -> None:
    """Lock the row of the token's user (FOR NO KEY UPDATE), before `spend` in the same
    transaction: a user's row is locked before any row of theirs (the lock order that erase,
    which deletes the user and cascades to the tokens, relies on)."""
    await connection.execute(
        "SELECT 1 FROM account_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_digest = $1 AND t.purpose = $2 FOR NO KEY UPDATE OF u",
        token_digest,
        purpose,
    )


async def spend(
    connection: Connection, *, token_digest: bytes, purpose: Purpose, now: datetime
) -> UUID | None:
    """Spend the token if it is open and its user active; its user's id, or None.

    A compare-and-set: of any number of concurrent calls with one token, one gets the id.
    """
    user_id: UUID | None = await connection.fetchval(
        "UPDATE account_tokens t SET used_at = $3 FROM users u"
        " WHERE t.token_digest = $1 AND t.purpose = $2 AND t.used_at IS NULL"
        " AND t.superseded_at IS NULL AND t.expires_at > $3"
        " AND u.id = t.user_id AND u.disabled_at IS NULL"
        " RETURNING t.user_id",
        token_digest,
        purpose,
        now,
    )
    return user_id


# One statement for a token and its message, so that both or neither are written, and so that
# `forgot` does the same work (one round trip) for an email with or without an account. The
# user's row is locked before their tokens (the lock order; see `lock_user_of`): `superseded`
# reads `recipient`, so no token row is taken before it.
# $1 who, $2 purpose, $3 digest, $4 now, $5 expires_at, $6 subject, $7 text, $8 html (sealed).
_ISSUE = """
WITH recipient AS (
    SELECT id, email FROM users WHERE {who} AND disabled_at IS NULL FOR NO KEY UPDATE
),
superseded AS (
    UPDATE account_tokens SET superseded_at = $4
    WHERE user_id IN (SELECT id FROM recipient) AND purpose = $2
      AND used_at IS NULL AND superseded_at IS NULL
),
issued AS (
    INSERT INTO account_tokens (token_digest, purpose, user_id, created_at, expires_at)
    SELECT $3, $2, id, $4, $5 FROM recipient
)
INSERT INTO mail_outbox
    (user_id, recipient, subject, text_body, html_body, created_at, next_attempt_at)
SELECT id, email, $6, $7, $8, $4, $4 FROM recipient
RETURNING id
"""
# Two constants joined; every value is a parameter.
_ISSUE_BY_EMAIL = _ISSUE.format(who="lower(email) = lower($1)")
_ISSUE_BY_ID = _ISSUE.format(who="id = $1")


async def issue(
    connection: Connection,
    *,
    email: str | None = None,
    user_id: UUID | None = None,
    purpose: Purpose,
    token_digest: bytes,
    now: datetime,
    expires_at: datetime,
    subject: str,
    sealed_text: str,
    sealed_html: str,
) -> bool:
    """For the active user of `email` (any case) or `user_id`: supersede their open tokens
    of `purpose`, store the new one and queue its message. Whether there was such a user."""
    who: str | UUID | None = email if email is not None else user_id
    statement = _ISSUE_BY_EMAIL if email is not None else _ISSUE_BY_ID
    mail_id = await connection.fetchval(
        statement,
        who,
        purpose,
        token_digest,
        now,
        expires_at,
        subject,
        sealed_text,
        sealed_html,
    )
    return mail_id is not None
