"""The audit log: who changed what, and the security events, in `audit_events`.

`record` writes one event on the connection of the change it describes, inside that change's
transaction, so an event exists exactly when its change committed. An event names a user by
id, never by email: erasing the user leaves the log saying what happened to whom, without
keeping who that was. `list_events` pages the log newest first for the admin API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import asyncpg

from tokenrota_server import telemetry
from tokenrota_server.db.pool import Connection, rows_affected

CLI_ACTOR = "cli"
SYSTEM_ACTOR = "system"  # the service itself: throttle bursts, reuse detection


class AuditAction(StrEnum):
    """What an event records; its `action` column."""

    LOGIN_THROTTLED = "login_throttled"
    REUSE_DETECTED = "reuse_detected"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - an action's name
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an action's name
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"
    USER_ROLES_SET = "user_roles_set"
    ROLE_GRANTED = "role_granted"
    ROLE_REVOKED = "role_revoked"
    SESSIONS_REVOKED = "sessions_revoked"
    USER_ERASED = "user_erased"
    ROLE_PUT = "role_put"
    ROLE_DELETED = "role_deleted"
    # A DPoP-bound refresh token without its key's proof, or with another key's (a theft).
    DPOP_PROOF_MISSING = "dpop_proof_missing"
    DPOP_KEY_MISMATCH = "dpop_key_mismatch"
    RESOURCE_CREATED = "resource_created"
    RESOURCE_UPDATED = "resource_updated"
    RESOURCE_DELETED = "resource_deleted"
    CLIENT_RESOURCE_GRANTED = "client_resource_granted"
    CLIENT_RESOURCE_REVOKED = "client_resource_revoked"
    # A token exchange (RFC 8693): who acted, for which user and session, toward what.
    TOKEN_EXCHANGED = "token_exchanged"  # noqa: S105 - an action's name
    # An assertion of a known credential refused; `details.reason` says why (origin, rp_id,
    # challenge, other_user, user_verification, signature, counter).
    PASSKEY_REFUSED = "passkey_refused"
    # Second factors: enrolled (live after its first code), removed (by the user or an
    # operator), recovery codes issued, and every second-factor step: accepted, refused, or
    # throttled. Never a code or a secret in the details.
    MFA_FACTOR_ENROLLED = "mfa_factor_enrolled"
    MFA_FACTOR_REMOVED = "mfa_factor_removed"
    MFA_RECOVERY_CODES_ISSUED = "mfa_recovery_codes_issued"
    MFA_SUCCEEDED = "mfa_succeeded"
    MFA_FAILED = "mfa_failed"
    MFA_THROTTLED = "mfa_throttled"
    # The operators' API: OAuth clients, created and invited users, metadata.
    CLIENT_CREATED = "client_created"
    CLIENT_UPDATED = "client_updated"
    CLIENT_SECRET_ROTATED = "client_secret_rotated"  # noqa: S105 - an action's name
    CLIENT_DELETED = "client_deleted"
    USER_CREATED = "user_created"
    USER_INVITED = "user_invited"
    INVITATION_ACCEPTED = "invitation_accepted"
    PASSWORD_RESET_SENT = "password_reset_sent"  # noqa: S105 - an action's name
    VERIFICATION_SENT = "verification_sent"
    APP_METADATA_SET = "app_metadata_set"
    USER_METADATA_SET = "user_metadata_set"


@dataclass(frozen=True)
class AuditEvent:
    """One row of the log, as the admin API shows it."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    user_id: UUID | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "user_id": str(self.user_id) if self.user_id is not None else None,
            "ip": self.ip,
            "request_id": self.request_id,
            "details": self.details,
        }


def user_actor(user_id: UUID) -> str:
    """The actor of what a user does to their own account."""
    return f"user:{user_id}"


def client_actor(client_id: str) -> str:
    """The actor of an admin API call: the client whose token made it."""
    return f"client:{client_id}"


async def record(
    connection: Connection,
    action: AuditAction,
    *,
    actor: str,
    now: datetime,
    user_id: UUID | None = None,
    target: str | None = None,
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write one event on `connection` (the caller's transaction). The request id is the
    current request's, if any. `target` defaults to the user's id; never an email or secret."""
    context = telemetry.current()
    await connection.execute(
        "INSERT INTO audit_events (at, actor, action, target, user_id, ip, request_id, details)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
        now,
        actor,
        action.value,
        target if target is not None else (str(user_id) if user_id is not None else None),
        user_id,
        ip,
        context.request_id if context is not None else None,
        json.dumps(details or {}),
    )


async def record_throttle_burst(
    connection: Connection,
    *,
    crossed: tuple[str, ...],
    user_id: UUID | None,
    ip: str | None,
    now: datetime,
) -> None:
    """If this password attempt crossed a throttle limit (`crossed`: its first refusal in the
    window), record it once, naming the user by id if the email has an account, never the
    email itself. Call it in the counting's transaction."""
    if crossed:
        await record(
            connection,
            AuditAction.LOGIN_THROTTLED,
            actor=SYSTEM_ACTOR,
            now=now,
            user_id=user_id,
            ip=ip,
            details={"limits": list(crossed)},
        )


@dataclass(frozen=True)
class AuditFilter:
    """What a listing of the log is narrowed to; None: no narrowing. `at_or_after` is
    inclusive, `at_before` exclusive."""

    user_id: UUID | None = None
    actor: str | None = None
    action: AuditAction | None = None
    at_or_after: datetime | None = None
    at_before: datetime | None = None


async def list_events(
    connection: Connection,
    *,
    before: int | None,
    limit: int,
    user_id: UUID | None = None,
    narrowed: AuditFilter | None = None,
) -> list[AuditEvent]:
    """Up to `limit` events with ids below `before` (all when None), newest first; only the
    user's when `user_id` is given, and only those `narrowed` admits. Keyset on the id: a page
    never repeats or skips an event however many are written meanwhile (new ones have higher
    ids)."""
    narrowed = narrowed or AuditFilter()
    rows = await connection.fetch(
        "SELECT id, at, actor, action, target, user_id, ip, request_id, details"
        " FROM audit_events WHERE ($1::bigint IS NULL OR id < $1)"
        " AND ($2::uuid IS NULL OR user_id = $2)"
        " AND ($4::text IS NULL OR actor = $4) AND ($5::text IS NULL OR action = $5)"
        " AND ($6::timestamptz IS NULL OR at >= $6) AND ($7::timestamptz IS NULL OR at < $7)"
        " ORDER BY id DESC LIMIT $3",
        before,
        user_id or narrowed.user_id,
        limit,
        narrowed.actor,
        narrowed.action.value if narrowed.action is not None else None,
        narrowed.at_or_after,
        narrowed.at_before,
    )
    return [_event(row) for row in rows]


async def delete_older_than(connection: Connection, *, cutoff: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` events recorded before `cutoff`; return how many."""
    status = await connection.execute(
        "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 LIMIT $2)",
        cutoff,
        batch_size,
    )
    return rows_affected(status)


def _event(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        user_id=row["user_id"],
        ip=row["ip"],
        request_id=row["request_id"],
        details=json.loads(row["details"]),
    )
