"""SQL for the `users` table. Each function takes the connection first and owns no transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from tokenrota_server.database import Connection
from tokenrota_server.errors import EmailTaken


@dataclass(frozen=True)
class User:
    """What the API shows of a user."""

    id: UUID
    email: str
    created_at: datetime

    def to_json(self) -> dict[str, str]:
        return {"id": str(self.id), "email": self.email, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class Credentials:
    """A user with what login needs to check."""

    user: User
    password_hash: str
    disabled: bool

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, disabled={self.disabled})"


def user_from_row(row: asyncpg.Record) -> User:
    """The `User` of a row that has the users table's `id`, `email` and `created_at`."""
    return User(id=row["id"], email=row["email"], created_at=row["created_at"])


async def insert_user(
    connection: Connection, *, email: str, password_hash: str, now: datetime
) -> User:
    """Create a user; raise `EmailTaken` if the email exists in any letter case."""
    try:
        row = await connection.fetchrow(
            "INSERT INTO users (email, password_hash, created_at, updated_at)"
            " VALUES ($1, $2, $3, $3) RETURNING id, email, created_at",
            email,
            password_hash,
            now,
        )
    except asyncpg.UniqueViolationError:
        raise EmailTaken() from None
    assert row is not None
    return user_from_row(row)


async def update_password_hash(
    connection: Connection, user_id: UUID, password_hash: str, now: datetime
) -> None:
    """Store a new password hash (a changed password, or a rehash under new argon2 parameters)."""
    await connection.execute(
        "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1",
        user_id,
        password_hash,
        now,
    )


async def find_session_user(
    connection: Connection,
    *,
    user_id: UUID,
    session_id: UUID,
    now: datetime,
    idle_since: datetime | None = None,
) -> User | None:
    """The user, if active and if `session_id` is one of their live sessions; else None.

    One round trip for /profile's stateful check: a revoked session stops its access tokens at
    once, not when they expire.
    """
    row = await connection.fetchrow(
        "SELECT u.id, u.email, u.created_at FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id = $1 AND u.id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3"
        " AND u.disabled_at IS NULL AND ($4::timestamptz IS NULL OR s.last_used_at > $4)",
        session_id,
        user_id,
        now,
        idle_since,
    )
    return user_from_row(row) if row is not None else None


async def disable_user(connection: Connection, email: str, now: datetime) -> UUID | None:
    """Mark the user with this email (any letter case) disabled; None if there is none.

    A user already disabled keeps their first `disabled_at`.
    """
    user_id: UUID | None = await connection.fetchval(
        "UPDATE users SET disabled_at = coalesce(disabled_at, $2), updated_at = $2"
        " WHERE lower(email) = lower($1) RETURNING id",
        email,
        now,
    )
    return user_id
