"""SQL for mfa tokens: proof of a right password, good for one second-factor step.

The table keeps the token's SHA-256, never the token. A token is live until it is spent or
expires; it names a user and the `remember` choice of the /login it came from. Functions take
the connection first and own no transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tokenrota_server.db.pool import Connection, rows_affected
from tokenrota_server.db.users import User, user_from_row


@dataclass(frozen=True)
class PendingLogin:
    """What a live mfa token stands for: the user whose password was right, and how."""

    user: User
    remember: bool


async def insert(
    connection: Connection,
    *,
    token_digest: bytes,
    user_id: UUID,
    now: datetime,
    expires_at: datetime,
    remember: bool,
) -> None:
    await connection.execute(
        "INSERT INTO mfa_tokens (token_digest, user_id, created_at, expires_at, remember)"
        " VALUES ($1, $2, $3, $4, $5)",
        token_digest,
        user_id,
        now,
        expires_at,
        remember,
    )


async def find_live(
    connection: Connection, *, token_digest: bytes, now: datetime
) -> PendingLogin | None:
    """The login a token stands for, while it is unspent, unexpired and its user active."""
    row = await connection.fetchrow(
        "SELECT u.id, u.email, u.created_at, u.email_verified_at, t.remember"
        " FROM mfa_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_digest = $1 AND t.used_at IS NULL AND t.expires_at > $2"
        " AND u.disabled_at IS NULL",
        token_digest,
        now,
    )
    if row is None:
        return None
    return PendingLogin(user=user_from_row(row), remember=row["remember"])


async def spend(connection: Connection, *, token_digest: bytes, now: datetime) -> bool:
    """Mark a token used (compare-and-set); False if a concurrent request spent it first.
    Its expiry is `find_live`'s to check."""
    status = await connection.execute(
        "UPDATE mfa_tokens SET used_at = $2 WHERE token_digest = $1 AND used_at IS NULL",
        token_digest,
        now,
    )
    return bool(status == "UPDATE 1")


async def delete_expired(connection: Connection, *, now: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` tokens past their expiry, spent or not (the purge's)."""
    status = await connection.execute(
        "DELETE FROM mfa_tokens WHERE token_digest IN"
        " (SELECT token_digest FROM mfa_tokens WHERE expires_at <= $1 LIMIT $2)",
        now,
        batch_size,
    )
    return rows_affected(status)
