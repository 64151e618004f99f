"""SQL for sessions and the refresh tokens that descend from them.

A session is one login; every refresh token belongs to one session and, after the first, has
the token it replaced as parent. A session is live while it is not revoked, not past its absolute
`expires_at`, and its user is not disabled. Functions take the connection first and own no
transaction: each hot path is a single statement, which Postgres runs atomically on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from tokenrota_server.db.pool import Connection, rows_affected
from tokenrota_server.db.roles import GRANTS_OF, Grants, grants_of_row


class RevokeReason(StrEnum):
    """Why a session ended early: `sessions.revoke_reason`, which a CHECK constraint lists."""

    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    USER_REVOKED = "user_revoked"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 - a reason's name, not a password
    USER_DISABLED = "user_disabled"
    REUSE_DETECTED = "reuse_detected"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a reason's name, not a password
    ADMIN = "admin"  # DELETE /admin/users/{id}/sessions
    IDLE = "idle"
    SESSION_LIMIT = "session_limit"


# The user's roles and scopes, read by the statements that mint tokens: constants, no values.
_GRANTS_OF_NEW_USER = GRANTS_OF.format(user_id="$2::uuid")
_GRANTS_OF_SESSION_USER = GRANTS_OF.format(user_id="s.user_id")


@dataclass(frozen=True)
class LiveSession:
    """What minting a token pair needs to know about a live session."""

    user_id: UUID
    email: str
    expires_at: datetime
    grants: Grants = field(default_factory=Grants)
    # False for a short session (`remember: false`): its refresh cookie has no Max-Age.
    remember: bool = True


@dataclass(frozen=True)
class SpentToken:
    """A refresh token's row as found when rotation did not win, with its child, if any."""

    used_at: datetime | None
    token_live: bool
    session_live: bool
    session: LiveSession
    child_digest: bytes | None
    child_issued_at: datetime | None
    child_expires_at: datetime | None
    child_live: bool


@dataclass(frozen=True)
class NewToken:
    """A refresh token about to be stored: its digest and lifetime, never the token."""

    digest: bytes
    issued_at: datetime
    expires_at: datetime


async def create_session(
    connection: Connection,
    *,
    session_id: UUID,
    user_id: UUID,
    now: datetime,
    expires_at: datetime,
    first_token: NewToken,
    user_agent: str | None,
    ip: str | None,
    remember: bool = True,
) -> Grants:
    """Start a session and store its first refresh token, in one statement; return the
    user's roles and scopes, read by that same statement, for the first access token."""
    row = await connection.fetchrow(
        "WITH session AS ("  # noqa: S608 - constants only
        "  INSERT INTO sessions"
        "    (id, user_id, created_at, last_used_at, expires_at, user_agent, ip, remember)"
        "  VALUES ($1, $2, $3, $3, $4, $5, $6, $10) RETURNING id"
        "), token AS (INSERT INTO refresh_tokens (session_id, token_digest, issued_at, expires_at)"
        " SELECT id, $7, $8, $9 FROM session)"
        f" SELECT {_GRANTS_OF_NEW_USER}",
        session_id,
        user_id,
        now,
        expires_at,
        user_agent,
        ip,
        first_token.digest,
        first_token.issued_at,
        first_token.expires_at,
        remember,
    )
    assert row is not None
    return grants_of_row(row)


# Compare-and-set: of any number of concurrent statements on one digest, the row lock lets one
# set used_at; the others re-check `used_at IS NULL` after it commits, and match nothing.
def _rotate_statement(*, with_proof: bool) -> str:
    """The rotation; `with_proof`, it first records a DPoP proof ($8 jkt, $9 jti, $10 its expiry)
    and spends the token only if the proof is new, in the same round trip, and says which."""
    proof, spend_if_new, fresh, rows = "", "", "", "parent p"
    if with_proof:
        proof = (
            "proof AS (INSERT INTO dpop_proofs (jkt, jti, expires_at) VALUES ($8, $9, $10)"
            " ON CONFLICT DO NOTHING RETURNING true), "
        )
        spend_if_new = " AND EXISTS (SELECT 1 FROM proof)"
        fresh = "EXISTS (SELECT 1 FROM proof) AS fresh_proof, "
        # One row always, so a replayed proof is told apart from a token already spent.
        rows = "(VALUES (1)) AS one (x) LEFT JOIN parent p ON true"
    return f"""
WITH {proof}parent AS (
    UPDATE refresh_tokens t SET used_at = $3
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE t.token_digest = $1 AND t.session_id = $2 AND s.id = t.session_id
      AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > $3
      AND s.revoked_at IS NULL AND s.expires_at > $3 AND u.disabled_at IS NULL
      AND ($7::timestamptz IS NULL OR s.last_used_at > $7){spend_if_new}
    RETURNING t.id, t.session_id, s.user_id, u.email, s.expires_at, s.remember
), child AS (
    INSERT INTO refresh_tokens (session_id, parent_id, token_digest, issued_at, expires_at)
    SELECT session_id, id, $4, $5, $6 FROM parent
), touched AS (
    UPDATE sessions SET last_used_at = $3 WHERE id = (SELECT session_id FROM parent)
)
SELECT {fresh}p.user_id, p.email, p.expires_at, p.remember, {GRANTS_OF.format(user_id="p.user_id")}
FROM {rows}
"""  # noqa: S608 - constants joined; every value is a parameter


_ROTATE = _rotate_statement(with_proof=False)
_ROTATE_WITH_PROOF = _rotate_statement(with_proof=True)


async def rotate(
    connection: Connection,
    *,
    token_digest: bytes,
    session_id: UUID,
    now: datetime,
    child: NewToken,
    idle_since: datetime | None = None,
) -> LiveSession | None:
    """Spend a live refresh token and store its child, in one round trip.

    Returns the session if this call won; None if the token is unknown, spent, revoked,
    expired, or its session or user is no longer live (`find_spent` tells which). A session
    last used at or before `idle_since` counts as ended (SESSION_IDLE_TIMEOUT).
    """
    row = await connection.fetchrow(
        _ROTATE,
        token_digest,
        session_id,
        now,
        child.digest,
        child.issued_at,
        child.expires_at,
        idle_since,
    )
    return _live_session(row) if row is not None else None


async def rotate_with_proof(
    connection: Connection,
    *,
    token_digest: bytes,
    session_id: UUID,
    now: datetime,
    child: NewToken,
    jkt: str,
    jti: str,
    proof_expires_at: datetime,
    idle_since: datetime | None = None,
) -> tuple[bool, LiveSession | None]:
    """`rotate` for a DPoP-bound session, recording its proof in the same round trip: (whether
    the proof was new, the session if this call won). A proof seen before spends nothing."""
    row = await connection.fetchrow(
        _ROTATE_WITH_PROOF,
        token_digest,
        session_id,
        now,
        child.digest,
        child.issued_at,
        child.expires_at,
        idle_since,
        jkt,
        jti,
        proof_expires_at,
    )
    assert row is not None
    live = _live_session(row) if row["user_id"] is not None else None
    return bool(row["fresh_proof"]), live


async def touch_live(
    connection: Connection,
    *,
    token_digest: bytes,
    session_id: UUID,
    now: datetime,
    idle_since: datetime | None = None,
) -> LiveSession | None:
    """Without rotation: check a refresh token's row and session, and mark the session used.

    Returns None, as `rotate` does, for a token that is unknown, spent, revoked or expired, or
    whose session or user is no longer live: a token spent by a rotating instance (a mixed fleet
    during a rollout, or an earlier setting) must not work again here (`find_spent` tells which).
    """
    row = await connection.fetchrow(
        "UPDATE sessions s SET last_used_at = $3 FROM refresh_tokens t, users u"  # noqa: S608 - constants only
        " WHERE t.token_digest = $1 AND t.session_id = $2 AND s.id = t.session_id"
        " AND u.id = s.user_id AND t.used_at IS NULL"
        " AND t.revoked_at IS NULL AND t.expires_at > $3"
        " AND s.revoked_at IS NULL AND s.expires_at > $3 AND u.disabled_at IS NULL"
        " AND ($4::timestamptz IS NULL OR s.last_used_at > $4)"
        f" RETURNING s.user_id, u.email, s.expires_at, s.remember, {_GRANTS_OF_SESSION_USER}",
        token_digest,
        session_id,
        now,
        idle_since,
    )
    return _live_session(row) if row is not None else None


async def find_spent(
    connection: Connection,
    *,
    token_digest: bytes,
    session_id: UUID,
    now: datetime,
    idle_since: datetime | None = None,
) -> SpentToken | None:
    """A refresh token's row, its session's state and its child; None if there is no row."""
    row = await connection.fetchrow(
        "SELECT t.used_at, t.revoked_at IS NULL AND t.expires_at > $3 AS token_live,"  # noqa: S608 - constants only
        " s.revoked_at IS NULL AND s.expires_at > $3 AND u.disabled_at IS NULL"
        " AND ($4::timestamptz IS NULL OR s.last_used_at > $4) AS session_live,"
        " s.user_id, u.email, s.expires_at, s.remember,"
        " c.token_digest AS child_digest, c.issued_at AS child_issued_at,"
        " c.expires_at AS child_expires_at,"
        " c.used_at IS NULL AND c.revoked_at IS NULL AND c.expires_at > $3 AS child_live,"
        f" {_GRANTS_OF_SESSION_USER}"
        " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
        " JOIN users u ON u.id = s.user_id"
        " LEFT JOIN refresh_tokens c ON c.parent_id = t.id"
        " WHERE t.token_digest = $1 AND t.session_id = $2",
        token_digest,
        session_id,
        now,
        idle_since,
    )
    if row is None:
        return None
    return SpentToken(
        used_at=row["used_at"],
        token_live=row["token_live"],
        session_live=row["session_live"],
        session=_live_session(row),
        child_digest=row["child_digest"],
        child_issued_at=row["child_issued_at"],
        child_expires_at=row["child_expires_at"],
        child_live=bool(row["child_live"]),
    )


async def revoke_session(
    connection: Connection, *, session_id: UUID, reason: RevokeReason, now: datetime
) -> bool:
    """Revoke a session (and with it every token it holds); False if it was not live."""
    status = await connection.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = $3"
        " WHERE id = $1 AND revoked_at IS NULL",
        session_id,
        now,
        reason,
    )
    return bool(status == "UPDATE 1")


async def revoke_session_of_token(
    connection: Connection,
    *,
    token_digest: bytes,
    session_id: UUID,
    reason: RevokeReason,
    now: datetime,
) -> bool:
    """Revoke the session a stored refresh token belongs to; False if none was live."""
    status = await connection.execute(
        "UPDATE sessions s SET revoked_at = $3, revoke_reason = $4 FROM refresh_tokens t"
        " WHERE t.token_digest = $1 AND t.session_id = $2 AND s.id = t.session_id"
        " AND s.revoked_at IS NULL",
        token_digest,
        session_id,
        now,
        reason,
    )
    return bool(status == "UPDATE 1")


@dataclass(frozen=True)
class SessionInfo:
    """What a user sees of one of their sessions at GET /sessions."""

    id: UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None
    name: str | None = None

    def to_json(self) -> dict[str, object]:
        """The fields GET /sessions and the admin API's listing share."""
        return {
            "id": str(self.id),
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "user_agent": self.user_agent,
            "ip": self.ip,
            "name": self.name,
        }


async def list_live_sessions(
    connection: Connection, *, user_id: UUID, now: datetime, idle_since: datetime | None = None
) -> list[SessionInfo]:
    """The user's sessions that are neither revoked nor expired, the most recently used first."""
    rows = await connection.fetch(
        "SELECT id, created_at, last_used_at, expires_at, user_agent, ip, name FROM sessions"
        " WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2"
        " AND ($3::timestamptz IS NULL OR last_used_at > $3)"
        " ORDER BY last_used_at DESC, created_at DESC",
        user_id,
        now,
        idle_since,
    )
    return [SessionInfo(**dict(row)) for row in rows]


async def revoke_user_session(
    connection: Connection, *, user_id: UUID, session_id: UUID, reason: RevokeReason, now: datetime
) -> bool:
    """Revoke one live session if it belongs to `user_id`; False if there is no such session."""
    status = await connection.execute(
        "UPDATE sessions SET revoked_at = $3, revoke_reason = $4"
        " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3",
        session_id,
        user_id,
        now,
        reason,
    )
    return bool(status == "UPDATE 1")


async def lock_user_tokens(connection: Connection, user_id: UUID) -> None:
    """Lock every refresh token of the user's sessions until the transaction ends: waits for
    the refreshes in flight, which hold them (a refresh locks its token, then its session)."""
    await connection.execute(
        "SELECT 1 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
        " WHERE s.user_id = $1 FOR UPDATE OF t",
        user_id,
    )


async def revoke_user_sessions(
    connection: Connection,
    *,
    user_id: UUID,
    reason: RevokeReason,
    now: datetime,
    keep: UUID | None = None,
) -> int:
    """Revoke every unrevoked session of the user except `keep`; return how many."""
    status = await connection.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = $3"
        " WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $4",
        user_id,
        now,
        reason,
        keep,
    )
    return rows_affected(status)


def _live_session(row: asyncpg.Record) -> LiveSession:
    return LiveSession(
        user_id=row["user_id"],
        email=row["email"],
        expires_at=row["expires_at"],
        grants=grants_of_row(row),
        remember=row["remember"],
    )


async def rename_session(
    connection: Connection, *, user_id: UUID, session_id: UUID, name: str | None, now: datetime
) -> bool:
    """Label one of the user's live sessions; False if there is no such session."""
    status = await connection.execute(
        "UPDATE sessions SET name = $3"
        " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $4",
        session_id,
        user_id,
        name,
        now,
    )
    return bool(status == "UPDATE 1")


async def revoke_idle_sessions(
    connection: Connection, *, idle_since: datetime, now: datetime
) -> int:
    """Revoke (reason `idle`) every live session last used at or before `idle_since`."""
    status = await connection.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = $3"
        " WHERE revoked_at IS NULL AND expires_at > $2 AND last_used_at <= $1",
        idle_since,
        now,
        RevokeReason.IDLE,
    )
    return rows_affected(status)


async def evict_least_recently_used(
    connection: Connection, *, user_id: UUID, keep: int, now: datetime
) -> int:
    """Revoke (reason `session_limit`) the user's live sessions beyond the `keep` most recently
    used; return how many. The caller holds the user's row lock, so logins queue here.

    Ties on `last_used_at` (whole-second clocks) go by creation order: the oldest goes first.
    """
    status = await connection.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = $4 WHERE id IN ("
        " SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2"
        " ORDER BY last_used_at DESC, created_seq DESC OFFSET $3)",
        user_id,
        now,
        keep,
        RevokeReason.SESSION_LIMIT,
    )
    return rows_affected(status)
