"""Use cases of the admin API (`http/admin.py`) and the operator's CLI (`cli/admin.py`): users,
their roles and sessions, erasure, roles, and the audit log.

Each change commits with its audit event (`audit.record`), so an event exists exactly when its
change did; a refused change writes neither. Listings page by keyset (`db/pagination.py`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
from tokenrota.claims import AccessClaims
from tokenrota.errors import InsufficientScope, InsufficientUserAuthentication

from tokenrota_server import session_policy
from tokenrota_server.config import Settings
from tokenrota_server.db import (
    account_tokens,
    audit,
    factors,
    oauth_clients,
    roles,
    sessions,
    throttle,
    users,
)
from tokenrota_server.db.audit import AuditAction
from tokenrota_server.db.pagination import decode_row_id, decode_time_key, encode_cursor
from tokenrota_server.errors import InvalidInput, InvalidToken, NotFound
from tokenrota_server.resources import ADMIN_SCOPE

if TYPE_CHECKING:
    # Only the admin API's check reads tokens: the CLI's commands never load JOSE for them.
    from tokenrota_server.tokens import TokenCodec

security_log = logging.getLogger("tokenrota.security")

MAX_EMAIL_PREFIX_LENGTH = 254


async def authorize_admin(
    pool: asyncpg.Pool, codec: TokenCodec, settings: Settings, access_token: str, now: datetime
) -> str:
    """The audit actor of an admin call (`client:<id>` or `user:<uuid>`); raise
    `InvalidToken`, `TokenExpired`, `InsufficientScope` or `InsufficientUserAuthentication`.

    Two kinds of caller. A client-credentials token with `admin`, for the service's own
    audience. Or an operator: a person's token for the admin API's audience (ADMIN_AUDIENCE,
    so none of their everyday tokens will do), with `admin` from a role, of an aal2 login at
    most ADMIN_MAX_AUTH_AGE old, not delegated (`act`). Either way the database is read on
    every call: the client enabled and still holding `admin`, its token not revoked; the person
    enabled, the session live, a role still granting `admin`.
    """
    from tokenrota_server.tokens import unverified_audience

    admin_audience = settings.admin_api_audience
    # Which audience to check the token for: the signature then covers the `aud` read here.
    for_admin_api = unverified_audience(access_token) == admin_audience
    claims = codec.verify_access(
        access_token, now, audience=admin_audience if for_admin_api else None
    )
    if ADMIN_SCOPE not in claims.scope.split(" "):
        raise InsufficientScope((ADMIN_SCOPE,))
    if claims.client_id is not None:
        if for_admin_api:
            # A client's admin token is for the service's own audience; nothing mints one else.
            raise InvalidToken()
        async with pool.acquire() as connection:
            live = await oauth_clients.is_admin_token_live(
                connection, client_id=claims.client_id, jti=claims.jti, scope=ADMIN_SCOPE
            )
        if not live:
            raise InvalidToken()
        return audit.client_actor(claims.client_id)
    return audit.user_actor(await _authorize_operator(pool, settings, claims, for_admin_api, now))


async def _authorize_operator(
    pool: asyncpg.Pool, settings: Settings, claims: AccessClaims, for_admin_api: bool, now: datetime
) -> UUID:
    """The id of the operator whose token `claims` are; see `authorize_admin`."""
    if not for_admin_api:
        raise InvalidToken(
            "An operator's token must be for the admin API's audience (log in with resource=...)."
        )
    if claims.actor is not None:
        raise InvalidToken("A delegated token cannot act on the admin API.")
    max_age = settings.admin_max_auth_age
    auth_time = claims.auth_time
    if claims.acr != "aal2" or auth_time is None or int(now.timestamp()) - auth_time > max_age:
        # RFC 9470: the client logs in again, with a second factor, and comes back.
        raise InsufficientUserAuthentication(acr_values="aal2", max_age=max_age)
    try:
        user_id, session_id = UUID(claims.subject), UUID(claims.session_id or "")
    except ValueError:
        raise InvalidToken() from None
    async with pool.acquire() as connection:
        live = await users.is_operator_session_live(
            connection,
            user_id=user_id,
            session_id=session_id,
            scope=ADMIN_SCOPE,
            now=now,
            idle_since=session_policy.idle_since(settings, now),
        )
    if not live:
        raise InvalidToken()
    return user_id


def parse_email_prefix(raw: str | None) -> str:
    """The `email` query parameter, lower-cased; raise `InvalidInput` if it is too long."""
    if raw is None:
        return ""
    if len(raw) > MAX_EMAIL_PREFIX_LENGTH or not raw.isprintable():
        raise InvalidInput("'email' must be at most 254 printable characters.")
    return raw.lower()


async def list_users(
    pool: asyncpg.Pool, *, email_prefix: str, cursor: str | None, limit: int
) -> tuple[list[users.AdminUser], str | None]:
    """A page of users, oldest first, and the cursor of the next page (None after the last)."""
    query = f"users:{email_prefix}"
    after = decode_time_key(query, cursor) if cursor is not None else None
    async with pool.acquire() as connection:
        found = await users.list_users_page(
            connection, email_prefix=email_prefix, after=after, limit=limit + 1
        )
    page = found[:limit]
    next_cursor = (
        encode_cursor(query, [page[-1].created_at.isoformat(), str(page[-1].id)])
        if len(found) > limit
        else None
    )
    return page, next_cursor


async def get_user(pool: asyncpg.Pool, user_id: UUID, now: datetime) -> users.AdminUser:
    """One user with their roles, `app_metadata`, last sign-in and live sessions (each with
    its device name, address and last use); raise `NotFound`."""
    async with pool.acquire() as connection:
        found = await users.find_admin_user(connection, user_id, now)
        if found is None:
            raise NotFound("No such user.")
        live = await sessions.list_live_sessions(connection, user_id=user_id, now=now)
    return replace(found, sessions=tuple(live))


async def set_disabled(
    pool: asyncpg.Pool, user_id: UUID, *, disabled: bool, actor: str, now: datetime
) -> int:
    """Disable or enable a user; return how many sessions the disabling ended (0 to enable).
    Raise `NotFound`.

    The one path of both the admin API and the CLI. One transaction: no session outlives the
    flag, no reset or verification link outlives it into a later enable, and the audit event
    (by `actor`) commits with them; ended sessions stay ended.
    """
    async with pool.acquire() as connection, connection.transaction():
        if not await users.set_disabled(connection, user_id, disabled=disabled, now=now):
            raise NotFound("No such user.")
        ended = 0
        details: dict[str, Any] = {}
        if disabled:
            ended = await sessions.revoke_user_sessions(
                connection, user_id=user_id, reason=sessions.RevokeReason.USER_DISABLED, now=now
            )
            details["sessions_revoked"] = ended
            # A link mailed before the disable must not outlive it into a later enable.
            await account_tokens.void_user_tokens(connection, user_id=user_id, now=now)
        action = AuditAction.USER_DISABLED if disabled else AuditAction.USER_ENABLED
        await audit.record(
            connection, action, actor=actor, now=now, user_id=user_id, details=details
        )
    if disabled:
        security_log.info("user disabled", extra={"user_id": user_id, "sessions": ended})
    else:
        security_log.info("user enabled", extra={"user_id": user_id})
    return ended


async def set_roles(
    pool: asyncpg.Pool, user_id: UUID, names: tuple[str, ...], *, actor: str, now: datetime
) -> users.AdminUser:
    """Make `names` exactly the user's roles; raise `NotFound` or `InvalidInput` (an
    unknown role: nothing is written). Takes effect at the user's next refresh."""
    async with pool.acquire() as connection, connection.transaction():
        before = await roles.lock_roles_of(connection, user_id)
        if before is None:
            raise NotFound("No such user.")
        unknown = await roles.unknown_roles(connection, names)
        if unknown:
            raise InvalidInput("No role has this name: " + ", ".join(unknown)[:200] + ".")
        await roles.set_user_roles(connection, user_id, names)
        await audit.record(
            connection,
            AuditAction.USER_ROLES_SET,
            actor=actor,
            now=now,
            user_id=user_id,
            details={"before": sorted(before), "after": list(names)},
        )
        found = await users.find_admin_user(connection, user_id, now)
        assert found is not None
        live = await sessions.list_live_sessions(connection, user_id=user_id, now=now)
    return replace(found, sessions=tuple(live))


async def list_sessions(
    pool: asyncpg.Pool, user_id: UUID, now: datetime
) -> list[sessions.SessionInfo]:
    """The user's live sessions; raise `NotFound`."""
    async with pool.acquire() as connection:
        if not await users.user_exists(connection, user_id):
            raise NotFound("No such user.")
        return await sessions.list_live_sessions(connection, user_id=user_id, now=now)


async def revoke_sessions(pool: asyncpg.Pool, user_id: UUID, *, actor: str, now: datetime) -> int:
    """Revoke every session of the user at once; return how many. Raise `NotFound`."""
    async with pool.acquire() as connection, connection.transaction():
        if not await users.user_exists(connection, user_id):
            raise NotFound("No such user.")
        count = await sessions.revoke_user_sessions(
            connection, user_id=user_id, reason=sessions.RevokeReason.ADMIN, now=now
        )
        await audit.record(
            connection,
            AuditAction.SESSIONS_REVOKED,
            actor=actor,
            now=now,
            user_id=user_id,
            details={"sessions_revoked": count},
        )
    return count


async def revoke_session(
    pool: asyncpg.Pool, user_id: UUID, session_id: UUID, *, actor: str, now: datetime
) -> None:
    """Revoke one live session of the user (a lost laptop); raise `NotFound` for a user that
    does not exist or a session that is not theirs or not live."""
    async with pool.acquire() as connection, connection.transaction():
        if not await users.user_exists(connection, user_id):
            raise NotFound("No such user.")
        revoked = await sessions.revoke_user_session(
            connection,
            user_id=user_id,
            session_id=session_id,
            reason=sessions.RevokeReason.ADMIN,
            now=now,
        )
        if not revoked:
            raise NotFound("No such session.")
        await audit.record(
            connection,
            AuditAction.SESSIONS_REVOKED,
            actor=actor,
            now=now,
            user_id=user_id,
            details={"sessions_revoked": 1, "session_id": str(session_id)},
        )


async def list_factors(pool: asyncpg.Pool, user_id: UUID) -> list[factors.Factor]:
    """The user's live second factors; raise `NotFound`."""
    async with pool.acquire() as connection:
        if not await users.user_exists(connection, user_id):
            raise NotFound("No such user.")
        return await factors.list_live_factors(connection, user_id)


async def remove_factor(
    pool: asyncpg.Pool, user_id: UUID, factor_id: UUID, *, actor: str, now: datetime
) -> None:
    """Remove a user's factor (a lost phone) and revoke every session of the user, in one
    transaction with its audit event; raise `NotFound` for an unknown user or factor."""
    async with pool.acquire() as connection, connection.transaction():
        kind = await factors.delete_factor(connection, user_id=user_id, factor_id=factor_id)
        if kind is None:
            raise NotFound("No such factor.")
        count = await sessions.revoke_user_sessions(
            connection, user_id=user_id, reason=sessions.RevokeReason.ADMIN, now=now
        )
        await audit.record(
            connection,
            AuditAction.MFA_FACTOR_REMOVED,
            actor=actor,
            now=now,
            user_id=user_id,
            details={"factor_id": str(factor_id), "type": kind.value, "sessions_revoked": count},
        )


async def erase_user(pool: asyncpg.Pool, user_id: UUID, *, actor: str, now: datetime) -> None:
    """Erase the user and everything that references them; raise `NotFound`.

    First the user is disabled (committed): from then on no refresh can start spending one of
    their tokens. Then one transaction locks the user's row (first, as every writer of a
    user's rows does), then the tokens that refreshes already in flight hold, in the order a
    refresh takes them (token, then session), waits for those to finish, and deletes the user;
    ON DELETE CASCADE takes the sessions, their tokens, the role grants and every later table
    that references users. Without the first step, a refresh holding
    a token and waiting for its session could deadlock with the cascade holding the session
    and waiting for the token. The audit event keeps the id, not the email.
    """
    async with pool.acquire() as connection:
        if not await users.set_disabled(connection, user_id, disabled=True, now=now):
            raise NotFound("No such user.")
        async with connection.transaction():
            # The user's row first, as every writer of their rows takes it (verification and
            # reset spend a token only after it): then the tokens, then the cascade.
            if not await users.lock_for_erasure(connection, user_id):
                raise NotFound("No such user.")  # erased meanwhile by another call
            await sessions.lock_user_tokens(connection, user_id)
            email = await users.delete_user(connection, user_id)
            if email is None:
                raise NotFound("No such user.")  # erased meanwhile by another call
            # The throttle's counter of the email has no foreign key to cascade along.
            await throttle.forget_email(connection, email)
            await audit.record(
                connection, AuditAction.USER_ERASED, actor=actor, now=now, user_id=user_id
            )


async def put_role(
    pool: asyncpg.Pool,
    name: str,
    scopes: tuple[str, ...],
    *,
    actor: str,
    now: datetime,
    require_mfa: bool = False,
) -> tuple[roles.Role, bool]:
    """Create a role or replace its scopes and `require_mfa` (its scopes only in aal2
    tokens); return it and whether it is new."""
    async with pool.acquire() as connection, connection.transaction():
        role, created = await roles.put_role(
            connection, name=name, scopes=scopes, now=now, require_mfa=require_mfa
        )
        await audit.record(
            connection,
            AuditAction.ROLE_PUT,
            actor=actor,
            now=now,
            target=f"role:{name}",
            details={"scopes": list(scopes), "require_mfa": require_mfa, "created": created},
        )
    return role, created


async def list_roles(pool: asyncpg.Pool) -> list[roles.Role]:
    """Every role."""
    async with pool.acquire() as connection:
        return await roles.list_roles(connection)


async def delete_role(pool: asyncpg.Pool, name: str, *, actor: str, now: datetime) -> None:
    """Delete a role; raise `NotFound`, or `RoleInUse` while a user holds it."""
    async with pool.acquire() as connection, connection.transaction():
        if not await roles.delete_role(connection, name):
            raise NotFound("No such role.")
        await audit.record(
            connection, AuditAction.ROLE_DELETED, actor=actor, now=now, target=f"role:{name}"
        )


async def change_role(
    pool: asyncpg.Pool, email: str, name: str, *, grant: bool, actor: str, now: datetime
) -> bool:
    """Grant or revoke one role of the user with `email`; False if nothing changed.

    Raises `NotFound` for an unknown email, `InvalidInput` for an unknown role (at grant).
    """
    async with pool.acquire() as connection, connection.transaction():
        user_id = await users.find_user_id(connection, email)
        if user_id is None:
            raise NotFound("No user has this email.")
        if grant:
            changed = await roles.grant_role(connection, user_id, name)
        else:
            changed = await roles.revoke_role(connection, user_id, name)
        if changed:
            action = AuditAction.ROLE_GRANTED if grant else AuditAction.ROLE_REVOKED
            await audit.record(
                connection, action, actor=actor, now=now, user_id=user_id, details={"role": name}
            )
    return changed


async def user_id_of(pool: asyncpg.Pool, email: str) -> UUID:
    """The id of the user with `email`; raise `NotFound`."""
    async with pool.acquire() as connection:
        user_id = await users.find_user_id(connection, email)
    if user_id is None:
        raise NotFound("No user has this email.")
    return user_id


async def list_audit(
    pool: asyncpg.Pool,
    *,
    user_id: UUID | None,
    cursor: str | None,
    limit: int,
    narrowed: audit.AuditFilter | None = None,
) -> tuple[list[audit.AuditEvent], str | None]:
    """A page of the audit log, newest first, and the next page's cursor (None after the last);
    only the events `narrowed` admits. The cursor is bound to every filter."""
    query = f"audit:{user_id or ''}"
    if narrowed is not None and narrowed != audit.AuditFilter():
        at_or_after, at_before = narrowed.at_or_after, narrowed.at_before
        query += "|" + json.dumps(
            [
                narrowed.actor,
                narrowed.action,
                at_or_after.isoformat() if at_or_after else None,
                at_before.isoformat() if at_before else None,
            ]
        )
    before = decode_row_id(query, cursor) if cursor is not None else None
    async with pool.acquire() as connection:
        found = await audit.list_events(
            connection, before=before, limit=limit + 1, user_id=user_id, narrowed=narrowed
        )
    page = found[:limit]
    next_cursor = encode_cursor(query, [page[-1].id]) if len(found) > limit else None
    return page, next_cursor
