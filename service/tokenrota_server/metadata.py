"""Users' metadata: `app_metadata` (set by operators at PATCH /admin/users/{id}) and
`user_metadata` (set by the user at PATCH /profile), JSON objects with caps on size and depth.

Operators choose which `app_metadata` keys become access-token claims
(TOKEN_CLAIMS_FROM_APP_METADATA); a registered claim can never be one, and `app_metadata`
cannot hold a key named like one, so no metadata ever stands in for `sub`, `aud` or `scope`.
`user_metadata` never enters a token. A PATCH replaces the whole object, with its audit event.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from tokenrota_server.db import audit, users
from tokenrota_server.db.audit import AuditAction
from tokenrota_server.errors import InvalidInput, NotFound

# The compact UTF-8 JSON text of one object, and its nesting (the object itself is level 1).
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 4
# Claims with a meaning of their own (RFC 7519 §4.1, RFC 9068, RFC 8693, RFC 9449, RFC 8176,
# OpenID Connect) and the ones this service mints: never taken from metadata.
REGISTERED_CLAIMS = frozenset(
    {
        "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "typ", "cty",
        "scope", "sid", "cnf", "amr", "acr", "auth_time", "act", "may_act",
        "client_id", "azp", "roles", "email", "email_verified", "nonce", "at_hash",
        "c_hash", "token_type", "ath", "htm", "htu", "groups", "entitlements",
    }
)  # fmt: skip


def check_metadata(value: object, field: str, *, claims_guard: bool) -> dict[str, Any]:
    """`value` if it is a JSON object within the caps; raise `InvalidInput` otherwise.

    With `claims_guard`, a top-level key that names a registered claim is refused too.
    Strings may not hold NUL or lone surrogates, which Postgres' jsonb cannot store.
    """
    if not isinstance(value, dict):
        raise InvalidInput(f"'{field}' must be a JSON object.")
    _check_nesting(value, field)
    try:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    except UnicodeEncodeError:
        raise InvalidInput(f"'{field}' holds a string that is not valid Unicode.") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"'{field}' is over {MAX_METADATA_BYTES} bytes as compact JSON.")
    if claims_guard:
        taken = sorted(key for key in value if key in REGISTERED_CLAIMS)
        if taken:
            raise InvalidInput(
                f"'{field}' may not have a key named like a registered claim: "
                + ", ".join(taken)
                + "."
            )
    return value


def _check_nesting(value: dict[str, Any], field: str) -> None:
    # Iterative: a deep value must be refused, not overflow the stack while it is measured.
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInput(
                    f"'{field}' nests objects and arrays over {MAX_METADATA_DEPTH} levels deep."
                )
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
        elif isinstance(item, str) and "\x00" in item:
            raise InvalidInput(f"'{field}' holds a string with a NUL character.")


def check_claim_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The keys of TOKEN_CLAIMS_FROM_APP_METADATA; a registered claim is a `ValueError`."""
    taken = sorted(key for key in keys if key in REGISTERED_CLAIMS)
    if taken:
        raise ValueError(", ".join(taken))
    return keys


def claims_from(app_metadata: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The chosen keys of a user's `app_metadata` that it has, as claims."""
    return {key: app_metadata[key] for key in keys if key in app_metadata}


async def set_app_metadata(
    pool: asyncpg.Pool, user_id: UUID, value: dict[str, Any], *, actor: str, now: datetime
) -> users.AdminUser:
    """Replace the user's `app_metadata`; raise `NotFound`. It shows in tokens from the
    user's next refresh."""
    async with pool.acquire() as connection, connection.transaction():
        if not await users.set_metadata(connection, user_id, app_metadata=value, now=now):
            raise NotFound("No such user.")
        # The keys, not the values: metadata may hold what the log should not keep.
        await audit.record(
            connection,
            AuditAction.APP_METADATA_SET,
            actor=actor,
            now=now,
            user_id=user_id,
            details={"keys": sorted(value)},
        )
        found = await users.find_admin_user(connection, user_id, now)
    assert found is not None
    return found


async def set_user_metadata(
    pool: asyncpg.Pool, user_id: UUID, value: dict[str, Any], *, now: datetime
) -> dict[str, Any]:
    """Replace the caller's own `user_metadata`; return it. Raise `NotFound` (erased)."""
    async with pool.acquire() as connection, connection.transaction():
        if not await users.set_metadata(connection, user_id, user_metadata=value, now=now):
            raise NotFound("No such user.")
        await audit.record(
            connection,
            AuditAction.USER_METADATA_SET,
            actor=audit.user_actor(user_id),
            now=now,
            user_id=user_id,
            details={"keys": sorted(value)},
        )
    return value


async def user_metadata_of(pool: asyncpg.Pool, user_id: UUID) -> dict[str, Any]:
    """The user's `user_metadata` ({} for an unknown user)."""
    async with pool.acquire() as connection:
        return await users.user_metadata_of(connection, user_id)
