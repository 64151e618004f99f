"""SQL for the `users` table. Each function takes the connection first and owns no transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import EmailTaken

if TYPE_CHECKING:
    from tokenrota_server.db.sessions import SessionInfo


@dataclass(frozen=True)
class User:
    """What the API shows of a user."""

    id: UUID
    email: str
    created_at: datetime
    email_verified: bool

    def to_json(self) -> dict[str, str | bool]:
        return {
            "id": str(self.id),
            "email": self.email,
            "created_at": self.created_at.isoformat(),
            "email_verified": self.email_verified,
        }


@dataclass(frozen=True)
class Credentials:
    """A user with what login needs to check."""

    user: User
    password_hash: str
    disabled: bool
    # A live second factor: a right password then leads to the second step, not a session.
    has_factor: bool = False

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, disabled={self.disabled})"


def user_from_row(row: asyncpg.Record) -> User:
    """The `User` of a row that has the users table's `id`, `email`, `created_at` and
    `email_verified_at`."""
    return User(
        id=row["id"],
        email=row["email"],
        created_at=row["created_at"],
        email_verified=row["email_verified_at"] is not None,
    )


async def insert_user(
    connection: Connection, *, email: str, password_hash: str, now: datetime
) -> User:
    """Create a user; raise `EmailTaken` if the email exists in any letter case."""
    try:
        row = await connection.fetchrow(
            "INSERT INTO users (email, password_hash, created_at, updated_at)"
            " VALUES ($1, $2, $3, $3) RETURNING id, email, created_at, email_verified_at",
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
        "SELECT u.id, u.email, u.created_at, u.email_verified_at"
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id = $1 AND u.id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3"
        " AND u.disabled_at IS NULL AND ($4::timestamptz IS NULL OR s.last_used_at > $4)",
        session_id,
        user_id,
        now,
        idle_since,
    )
    return user_from_row(row) if row is not None else None


async def is_operator_session_live(
    connection: Connection,
    *,
    user_id: UUID,
    session_id: UUID,
    scope: str,
    now: datetime,
    idle_since: datetime | None = None,
) -> bool:
    """Whether a person may still act as an operator: active, `session_id` one of their live
    sessions, and a role of theirs still grants `scope`. One round trip on every admin call,
    so a disabling, a revocation or a role taken away stops their tokens at once."""
    live = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id = $1 AND u.id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3"
        " AND u.disabled_at IS NULL AND ($4::timestamptz IS NULL OR s.last_used_at > $4)"
        " AND EXISTS (SELECT 1 FROM user_roles granted JOIN roles r ON r.name = granted.role"
        " WHERE granted.user_id = u.id AND $5 = ANY(r.scopes)))",
        session_id,
        user_id,
        now,
        idle_since,
        scope,
    )
    return bool(live)


async def user_exists(connection: Connection, user_id: UUID) -> bool:
    """Whether there is a user with this id."""
    found = await connection.fetchval("SELECT 1 FROM users WHERE id = $1", user_id)
    return found is not None


async def lock_user(connection: Connection, user_id: UUID) -> bool:
    """Lock the user's row until the transaction ends; False if there is no such user.

    What queues two changes of one user (two logins under the session cap, two role sets)."""
    found = await connection.fetchval("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
    return found is not None


async def mark_email_verified(connection: Connection, user_id: UUID, now: datetime) -> None:
    """Record that the user proved the email is theirs; the first proof's time is kept."""
    await connection.execute(
        "UPDATE users SET email_verified_at = coalesce(email_verified_at, $2) WHERE id = $1",
        user_id,
        now,
    )


@dataclass(frozen=True)
class AdminUser:
    """What the admin API shows of a user; `live_sessions` only when asked for one user."""

    id: UUID
    email: str
    created_at: datetime
    disabled: bool
    email_verified: bool
    roles: tuple[str, ...]
    live_sessions: int | None = None
    # Only when one user is shown: what the operators' console shows of them.
    app_metadata: dict[str, Any] | None = None
    last_sign_in_at: datetime | None = None
    sessions: tuple[SessionInfo, ...] | None = None

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "id": str(self.id),
            "email": self.email,
            "created_at": self.created_at.isoformat(),
            "disabled": self.disabled,
            "email_verified": self.email_verified,
            "roles": list(self.roles),
        }
        if self.live_sessions is not None:
            body["live_sessions"] = self.live_sessions
        if self.app_metadata is not None:
            body["app_metadata"] = self.app_metadata
            body["last_sign_in_at"] = (
                self.last_sign_in_at.isoformat() if self.last_sign_in_at else None
            )
        if self.sessions is not None:
            body["sessions"] = [session.to_json() for session in self.sessions]
        return body


_ADMIN_COLUMNS = (
    "u.id, u.email, u.created_at, u.disabled_at IS NOT NULL AS disabled,"
    " u.email_verified_at IS NOT NULL AS email_verified,"
    " coalesce((SELECT array_agg(g.role) FROM user_roles g WHERE g.user_id = u.id),"
    " '{}'::text[]) AS roles"
)


def _admin_user(row: asyncpg.Record, live_sessions: int | None = None) -> AdminUser:
    return AdminUser(
        id=row["id"],
        email=row["email"],
        created_at=row["created_at"],
        disabled=row["disabled"],
        email_verified=row["email_verified"],
        roles=tuple(sorted(row["roles"])),
        live_sessions=live_sessions,
    )


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, in code point (byte)
    order; None when there is none (the prefix is all U+10FFFF)."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:
        last = 0xE000  # surrogates are not characters; Postgres text cannot hold them
    return stripped[:-1] + chr(last)


def users_page_query(
    *, email_prefix: str, after: tuple[datetime, UUID] | None, limit: int
) -> tuple[str, list[object]]:
    """The SQL and arguments of `list_users_page` (apart, so a test can EXPLAIN it)."""
    conditions: list[str] = []
    arguments: list[object] = []
    if email_prefix:
        upper = prefix_upper_bound(email_prefix)
        arguments.append(email_prefix)
        conditions.append(f"lower(u.email) ~>=~ ${len(arguments)}")
        if upper is not None:
            arguments.append(upper)
            conditions.append(f"lower(u.email) ~<~ ${len(arguments)}")
    if after is not None:
        arguments.extend(after)
        conditions.append(f"(u.created_at, u.id) > (${len(arguments) - 1}, ${len(arguments)})")
    arguments.append(limit)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        f"SELECT {_ADMIN_COLUMNS} FROM users u{where}"  # noqa: S608 - constants only
        f" ORDER BY u.created_at, u.id LIMIT ${len(arguments)}"
    )
    return sql, arguments


async def list_users_page(
    connection: Connection,
    *,
    email_prefix: str,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[AdminUser]:
    """Up to `limit` users in (created_at, id) order after the key `after`, whose lower-cased
    email starts with `email_prefix` (lower-case already; empty: everyone).

    The prefix is a range on `lower(email)` in byte order (text_pattern_ops), not a LIKE, so
    the index `users_email_lower_prefix_idx` serves it even in a prepared statement's
    generic plan; a LIKE with a parameter pattern can use no index there.
    """
    sql, arguments = users_page_query(email_prefix=email_prefix, after=after, limit=limit)
    rows = await connection.fetch(sql, *arguments)
    return [_admin_user(row) for row in rows]


async def find_admin_user(connection: Connection, user_id: UUID, now: datetime) -> AdminUser | None:
    """One user as the admin API shows them, with how many live sessions they have, their
    `app_metadata` and their last sign-in (the newest session on record; purged sessions
    are forgotten)."""
    row = await connection.fetchrow(
        f"SELECT {_ADMIN_COLUMNS},"  # noqa: S608 - a constant; values are $n
        " (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL"
        " AND s.expires_at > $2) AS live_sessions,"
        " (SELECT max(s.created_at) FROM sessions s WHERE s.user_id = u.id) AS last_sign_in_at,"
        " u.app_metadata FROM users u WHERE u.id = $1",
        user_id,
        now,
    )
    if row is None:
        return None
    return replace(
        _admin_user(row, row["live_sessions"]),
        app_metadata=json.loads(row["app_metadata"]),
        last_sign_in_at=row["last_sign_in_at"],
    )


async def set_metadata(
    connection: Connection,
    user_id: UUID,
    *,
    now: datetime,
    app_metadata: dict[str, Any] | None = None,
    user_metadata: dict[str, Any] | None = None,
) -> bool:
    """Replace the user's `app_metadata` or `user_metadata` (None: keep it); False if there
    is no such user."""
    status = await connection.execute(
        "UPDATE users SET app_metadata = coalesce($2::jsonb, app_metadata),"
        " user_metadata = coalesce($3::jsonb, user_metadata), updated_at = $4 WHERE id = $1",
        user_id,
        json.dumps(app_metadata) if app_metadata is not None else None,
        json.dumps(user_metadata) if user_metadata is not None else None,
        now,
    )
    return bool(status == "UPDATE 1")


async def user_metadata_of(connection: Connection, user_id: UUID) -> dict[str, Any]:
    """The user's `user_metadata`; {} if there is no such user."""
    raw = await connection.fetchval("SELECT user_metadata FROM users WHERE id = $1", user_id)
    return json.loads(raw) if raw is not None else {}


async def find_user(connection: Connection, user_id: UUID) -> User | None:
    """The user with this id, disabled or not; None if there is none."""
    row = await connection.fetchrow(
        "SELECT id, email, created_at, email_verified_at FROM users WHERE id = $1", user_id
    )
    return user_from_row(row) if row is not None else None


async def find_user_id(connection: Connection, email: str) -> UUID | None:
    """The id of the user with this email, in any letter case; None if there is none."""
    user_id: UUID | None = await connection.fetchval(
        "SELECT id FROM users WHERE lower(email) = lower($1)", email
    )
    return user_id


async def set_disabled(
    connection: Connection, user_id: UUID, *, disabled: bool, now: datetime
) -> bool:
    """Disable (keeping a first `disabled_at`) or enable a user; False if there is none."""
    status = await connection.execute(
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, $3) END,"
        " updated_at = $3 WHERE id = $1",
        user_id,
        disabled,
        now,
    )
    return bool(status == "UPDATE 1")


async def lock_for_erasure(connection: Connection, user_id: UUID) -> bool:
    """Lock the user's row as a DELETE would (FOR UPDATE), first in the erasing transaction;
    False if there is none. Every writer of a user's rows takes this row first (the lock
    order), so erase waits for them, or they for it, and never each for the other."""
    found: bool = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 FOR UPDATE)", user_id
    )
    return found


async def delete_user(connection: Connection, user_id: UUID) -> str | None:
    """Delete the user and, by ON DELETE CASCADE, everything that references them (sessions
    and their refresh tokens, role grants, and whatever later tables cascade); return the
    email it had, None if there was no such user."""
    email: str | None = await connection.fetchval(
        "DELETE FROM users WHERE id = $1 RETURNING email", user_id
    )
    return email
