"""Use cases of OAuth clients for operators: the admin API (`http/oauth_clients.py`) and the
CLI's client commands call these same functions, one path per action.

Each change commits with its audit event. A secret is returned once and kept only as its
argon2 hash. Rotation may keep the old secret working for a grace period the caller chooses
(at most `MAX_SECRET_GRACE` seconds), so a fleet can switch secrets without an outage.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from tokenrota_server.db import audit, oauth_clients
from tokenrota_server.db.audit import AuditAction
from tokenrota_server.db.oauth_clients import ManagedClient
from tokenrota_server.db.pagination import decode_cursor, encode_cursor
from tokenrota_server.errors import InvalidInput, MalformedRequest, NotFound

if TYPE_CHECKING:
    # Handed in by the caller: listing or disabling a client loads no password hasher.
    from tokenrota_server.passwords import Passwords

security_log = logging.getLogger("tokenrota.security")

MAX_NAME_LENGTH = 100
# A week: long enough to roll a secret through a fleet, short enough that a leaked old secret
# does not live on. The default keeps the CLI's earlier meaning: the old secret dies at once.
MAX_SECRET_GRACE = 7 * 24 * 3600
DEFAULT_SECRET_GRACE = 0
# The listing's cursor tag (`db/pagination.py`): it has no filters.
CLIENTS_QUERY = "clients"


def check_name(name: object) -> str:
    """A client's name: 1 to 100 printable characters; raise `InvalidInput`."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidInput(f"'name' must be 1 to {MAX_NAME_LENGTH} printable characters.")
    return name


def check_grace(grace: object) -> int:
    """Seconds the old secret keeps working: a whole number from 0 to `MAX_SECRET_GRACE`."""
    if type(grace) is not int or not 0 <= grace <= MAX_SECRET_GRACE:
        raise InvalidInput(f"'grace_seconds' must be a whole number from 0 to {MAX_SECRET_GRACE}.")
    return grace


def _target(client_id: str) -> str:
    return f"client:{client_id}"


async def list_clients(
    pool: asyncpg.Pool, *, cursor: str | None, limit: int
) -> tuple[list[ManagedClient], str | None]:
    """A page of clients, oldest first, and the next page's cursor (None after the last)."""
    query = CLIENTS_QUERY
    after = _decode_client_key(query, cursor) if cursor is not None else None
    async with pool.acquire() as connection:
        found = await oauth_clients.list_clients_page(connection, after=after, limit=limit + 1)
    page = found[:limit]
    next_cursor = None
    if len(found) > limit:
        last = page[-1].client
        next_cursor = encode_cursor(query, [last.created_at.isoformat(), last.client_id])
    return page, next_cursor


def _decode_client_key(query: str, cursor: str) -> tuple[datetime, str]:
    key = decode_cursor(query, cursor)
    if (
        len(key) != 2
        or not all(isinstance(part, str) for part in key)
        or not oauth_clients.is_plausible_client_id(key[1])
    ):
        raise MalformedRequest("The cursor is not valid.")
    try:
        at = datetime.fromisoformat(key[0])
        if at.tzinfo is None:
            raise ValueError("no offset")
        # 0001-01-01T00:00:00+14:00 is in no year datetime holds once in UTC.
        return at.astimezone(UTC), key[1]
    except (ValueError, OverflowError):
        raise MalformedRequest("The cursor is not valid.") from None


async def get_client(pool: asyncpg.Pool, client_id: str) -> ManagedClient:
    """One client; raise `NotFound`."""
    async with pool.acquire() as connection:
        found = await oauth_clients.find_managed_client(connection, client_id)
    if found is None:
        raise NotFound("No client has this id.")
    return found


async def create_client(
    pool: asyncpg.Pool,
    passwords: Passwords,
    *,
    name: str,
    scopes: tuple[str, ...],
    actor: str,
    now: datetime,
    dpop_bound_access_tokens: bool = False,
) -> tuple[ManagedClient, str]:
    """Register a client; return it and its secret, which is never shown again. With
    `dpop_bound_access_tokens` it gets tokens only with a DPoP proof (RFC 9449 §5.2)."""
    secret = oauth_clients.new_client_secret()
    secret_hash = await passwords.hash(secret)
    async with pool.acquire() as connection, connection.transaction():
        client = await oauth_clients.insert_client(
            connection,
            client_id=oauth_clients.new_client_id(),
            name=name,
            secret_hash=secret_hash,
            scopes=scopes,
            now=now,
            dpop_bound_access_tokens=dpop_bound_access_tokens,
        )
        await audit.record(
            connection,
            AuditAction.CLIENT_CREATED,
            actor=actor,
            now=now,
            target=_target(client.client_id),
            details={"scopes": list(scopes), "dpop_bound_access_tokens": dpop_bound_access_tokens},
        )
    security_log.info("client created", extra={"client_id": client.client_id})
    return ManagedClient(client, None), secret


async def update_client(
    pool: asyncpg.Pool,
    client_id: str,
    *,
    name: str | None = None,
    scopes: tuple[str, ...] | None = None,
    disabled: bool | None = None,
    dpop_bound_access_tokens: bool | None = None,
    actor: str,
    now: datetime,
) -> tuple[ManagedClient, bool]:
    """Change a client's name, scopes, state or DPoP requirement (None: unchanged); return it
    and whether anything changed (nothing changed writes no event). Raise `NotFound`.

    Disabling refuses its tokens at once (the admin check and introspection read the row)
    and names it in the revocation feed; enabling lets it get new tokens. Requiring DPoP
    (RFC 9449 §5.2) refuses its next token request without a proof; tokens it already holds
    live out their lifetime.
    """
    async with pool.acquire() as connection, connection.transaction():
        before = await oauth_clients.find_managed_client(connection, client_id, for_update=True)
        if before is None:
            raise NotFound("No client has this id.")
        after = await oauth_clients.update_client(
            connection,
            client_id,
            name=name,
            scopes=scopes,
            disabled=disabled,
            now=now,
            dpop_bound_access_tokens=dpop_bound_access_tokens,
        )
        assert after is not None
        changes: dict[str, Any] = {}
        if after.client.name != before.client.name:
            changes["name"] = True  # the name itself may be anything an operator typed
        if after.client.scopes != before.client.scopes:
            changes["scopes"] = {
                "before": list(before.client.scopes),
                "after": list(after.client.scopes),
            }
        if after.client.disabled != before.client.disabled:
            changes["disabled"] = after.client.disabled
        if after.client.dpop_bound_access_tokens != before.client.dpop_bound_access_tokens:
            changes["dpop_bound_access_tokens"] = after.client.dpop_bound_access_tokens
        if changes:
            await audit.record(
                connection,
                AuditAction.CLIENT_UPDATED,
                actor=actor,
                now=now,
                target=_target(client_id),
                details=changes,
            )
    if changes:
        security_log.info("client updated", extra={"client_id": client_id})
    return after, bool(changes)


async def rotate_secret(
    pool: asyncpg.Pool,
    passwords: Passwords,
    client_id: str,
    *,
    grace_seconds: int = DEFAULT_SECRET_GRACE,
    actor: str,
    now: datetime,
) -> tuple[ManagedClient, str]:
    """Give an active client a new secret, shown once; the old one works for `grace_seconds`
    more (0: it stops now). A second rotation ends the first one's grace: only the secret it
    replaces lives on. Raise `NotFound` (also for a disabled client)."""
    secret = oauth_clients.new_client_secret()
    secret_hash = await passwords.hash(secret)
    previous_expires_at = now + timedelta(seconds=grace_seconds) if grace_seconds else None
    async with pool.acquire() as connection, connection.transaction():
        rotated = await oauth_clients.rotate_secret_hash(
            connection, client_id, secret_hash, previous_expires_at=previous_expires_at
        )
        if rotated is None:
            raise NotFound("No active client has this id.")
        await audit.record(
            connection,
            AuditAction.CLIENT_SECRET_ROTATED,
            actor=actor,
            now=now,
            target=_target(client_id),
            details={"grace_seconds": grace_seconds},
        )
    security_log.info(
        "client secret rotated", extra={"client_id": client_id, "grace_seconds": grace_seconds}
    )
    return rotated, secret


async def delete_client(pool: asyncpg.Pool, client_id: str, *, actor: str, now: datetime) -> None:
    """Delete a client and its revoked-token records; its tokens are refused at once and the
    revocation feed names it. Raise `NotFound`."""
    async with pool.acquire() as connection, connection.transaction():
        if not await oauth_clients.delete_client(connection, client_id):
            raise NotFound("No client has this id.")
        await audit.record(
            connection, AuditAction.CLIENT_DELETED, actor=actor, now=now, target=_target(client_id)
        )
    security_log.info("client deleted", extra={"client_id": client_id})
