"""SQL for passkeys: `passkey_credentials` (one WebAuthn credential per passkey factor) and
`webauthn_challenges` (each challenge's digest, spent once). Functions take the connection first
and own no transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from tokenrota_server.db.pool import Connection, rows_affected
from tokenrota_server.db.users import User, user_from_row


class ChallengePurpose(StrEnum):
    """What a challenge may be spent on: `webauthn_challenges.purpose`."""

    REGISTER = "register"
    AUTHENTICATE = "authenticate"


@dataclass(frozen=True)
class StoredCredential:
    """A passkey's credential as an assertion is checked against it, and its user."""

    factor_id: UUID
    user: User
    credential_id: bytes
    public_key: bytes
    sign_count: int
    backup_eligible: bool

    @property
    def user_id(self) -> UUID:
        return self.user.id


def challenge_digest(challenge: bytes) -> bytes:
    return hashlib.sha256(challenge).digest()


async def insert_challenge(
    connection: Connection,
    *,
    challenge: bytes,
    purpose: ChallengePurpose,
    user_id: UUID | None,
    expires_at: datetime,
) -> None:
    await connection.execute(
        "INSERT INTO webauthn_challenges (challenge_digest, purpose, user_id, expires_at)"
        " VALUES ($1, $2, $3, $4)",
        challenge_digest(challenge),
        purpose,
        user_id,
        expires_at,
    )


async def spend_challenge(
    connection: Connection, *, challenge: bytes, purpose: ChallengePurpose, now: datetime
) -> tuple[UUID | None] | None:
    """Mark an open challenge of `purpose` used (a compare-and-set, so it is spent once however
    many race for it); return `(user_id,)` (the user it was issued for, if any), or None when
    it is unknown, used, expired or of another purpose."""
    row = await connection.fetchrow(
        "UPDATE webauthn_challenges SET used_at = $3"
        " WHERE challenge_digest = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3"
        " RETURNING user_id",
        challenge_digest(challenge),
        purpose,
        now,
    )
    return None if row is None else (row["user_id"],)


async def insert_credential(
    connection: Connection,
    *,
    factor_id: UUID,
    user_id: UUID,
    credential_id: bytes,
    public_key: bytes,
    sign_count: int,
    backup_eligible: bool,
    transports: list[str],
) -> bool:
    """Store a factor's credential; False if that credential id is already registered."""
    try:
        await connection.execute(
            "INSERT INTO passkey_credentials (factor_id, user_id, credential_id, public_key,"
            " sign_count, backup_eligible, transports) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            factor_id,
            user_id,
            credential_id,
            public_key,
            sign_count,
            backup_eligible,
            transports,
        )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def insert_factor(
    connection: Connection, *, factor_id: UUID, user_id: UUID, name: str, now: datetime
) -> None:
    """A passkey's row in `mfa_factors`: verified at once (its creation response proved it)."""
    await connection.execute(
        "INSERT INTO mfa_factors (id, user_id, type, name, created_at, verified_at)"
        " VALUES ($1, $2, 'passkey', $3, $4, $4)",
        factor_id,
        user_id,
        name,
        now,
    )


async def spend_challenge_and_find(
    connection: Connection,
    *,
    challenge: bytes,
    purpose: ChallengePurpose,
    credential_id: bytes,
    now: datetime,
) -> tuple[bool, StoredCredential | None]:
    """In one statement: spend the challenge (as `spend_challenge`) and read the credential
    with this id, if its factor is verified and its user not disabled. Whether the challenge
    was spent, and the credential."""
    row = await connection.fetchrow(
        "WITH spent AS (UPDATE webauthn_challenges SET used_at = $3"
        " WHERE challenge_digest = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3"
        " RETURNING 1)"
        " SELECT EXISTS (SELECT 1 FROM spent) AS spent, c.factor_id, c.public_key, c.sign_count,"
        " c.backup_eligible, u.id, u.email, u.created_at, u.email_verified_at"
        " FROM (SELECT 1) AS one"
        " LEFT JOIN (passkey_credentials c"
        "  JOIN mfa_factors f ON f.id = c.factor_id AND f.verified_at IS NOT NULL"
        "  JOIN users u ON u.id = c.user_id AND u.disabled_at IS NULL)"
        " ON c.credential_id = $4",
        challenge_digest(challenge),
        purpose,
        now,
        credential_id,
    )
    assert row is not None
    if row["factor_id"] is None:
        return row["spent"], None
    stored = StoredCredential(
        row["factor_id"],
        user_from_row(row),
        credential_id,
        bytes(row["public_key"]),
        row["sign_count"],
        row["backup_eligible"],
    )
    return row["spent"], stored


async def credential_descriptors(
    connection: Connection, user_id: UUID
) -> list[tuple[bytes, list[str]]]:
    """The ids and transports of the user's credentials (allow and exclude lists)."""
    rows = await connection.fetch(
        "SELECT credential_id, transports FROM passkey_credentials WHERE user_id = $1"
        " ORDER BY factor_id",
        user_id,
    )
    return [(bytes(row["credential_id"]), list(row["transports"])) for row in rows]


async def advance_sign_count(
    connection: Connection, *, factor_id: UUID, sign_count: int, now: datetime
) -> bool:
    """Move the counter forward to `sign_count` and note the factor's use; False when the
    stored counter is already there or beyond (a cloned authenticator, or a concurrent use).

    An authenticator that keeps no counter reports 0 every time: accepted while the stored
    counter is 0 too (WebAuthn L2 §6.1.1).
    """
    status = await connection.execute(
        "UPDATE passkey_credentials SET sign_count = $2"
        " WHERE factor_id = $1 AND (sign_count < $2 OR (sign_count = 0 AND $2 = 0))",
        factor_id,
        sign_count,
    )
    if rows_affected(status) == 0:
        return False
    await connection.execute(
        "UPDATE mfa_factors SET last_used_at = $2 WHERE id = $1", factor_id, now
    )
    return True


async def delete_expired_challenges(
    connection: Connection, *, now: datetime, batch_size: int
) -> int:
    """Delete up to `batch_size` challenges past their expiry; return how many."""
    status = await connection.execute(
        "DELETE FROM webauthn_challenges WHERE challenge_digest IN (SELECT challenge_digest"
        " FROM webauthn_challenges WHERE expires_at <= $1 LIMIT $2)",
        now,
        batch_size,
    )
    return rows_affected(status)
