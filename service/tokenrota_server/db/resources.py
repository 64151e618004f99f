"""SQL for resources (RFC 8707: the APIs tokens are minted for) and clients' grants to them.

A resource is an absolute URI (its tokens' `aud`), a name, the scopes it defines and an
optional access-token lifetime shorter than the default. A grant ties a client to a resource,
one row per kind (`GrantKind`). Functions take the connection first and own no transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from tokenrota_server.db.pool import Connection, rows_affected
from tokenrota_server.errors import InvalidTarget

MAX_URI_LENGTH = 512
# RFC 3986 absolute-URI without a fragment: a scheme, ":", then only the characters a URI may
# hold (unreserved, sub-delims, ":", "@", "/", "?", and %XX escapes). No "#", no space, no
# control or non-ASCII character: an identifier is compared byte for byte, never normalised.
# "[" and "]" only around an IP literal host right after "//" (http://[::1]:8000/api).
_URI_CHARACTER = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})"
_ABSOLUTE_URI = re.compile(
    rf"[A-Za-z][A-Za-z0-9+.-]*:(?://\[[0-9A-Fa-f:.]+\]{_URI_CHARACTER}*|{_URI_CHARACTER}+)"
)
_COLUMNS = "id, uri, name, scopes, access_token_ttl, created_at"
_JOINED_COLUMNS = "r.id, r.uri, r.name, r.scopes, r.access_token_ttl, r.created_at"


class GrantKind(StrEnum):
    """What a client may do with a resource (`client_resources.kind`)."""

    # The client is the resource's own server: a user's token for it may be its subject token.
    SERVES = "serves"
    # client_credentials with `resource`: a token of the client's own for that API.
    TOKEN = "token"  # noqa: S105 - a grant's kind, not a secret
    # Token exchange toward the resource, on behalf of the subject token's user.
    EXCHANGE = "exchange"


@dataclass(frozen=True)
class Resource:
    """A registered resource, as the admin API shows it."""

    id: UUID
    uri: str
    name: str
    scopes: tuple[str, ...]
    access_token_ttl: int | None
    created_at: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "uri": self.uri,
            "name": self.name,
            "scopes": list(self.scopes),
            "access_token_ttl": self.access_token_ttl,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class ClientGrant:
    """A client's grant toward a resource: what it may do there and with which scopes."""

    client_id: str
    resource: Resource
    kind: GrantKind
    scopes: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "resource": self.resource.uri,
            "resource_id": str(self.resource.id),
            "kind": self.kind.value,
            "scopes": list(self.scopes),
        }


def check_uri(value: object) -> str:
    """`value` if it is an absolute URI without a fragment (at most 512 characters); raise
    `InvalidTarget` otherwise (relative, with a fragment, not a string, too long)."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_URI_LENGTH
        or not _ABSOLUTE_URI.fullmatch(value)
    ):
        raise InvalidTarget()
    return value


def _resource(row: asyncpg.Record) -> Resource:
    return Resource(
        id=row["id"],
        uri=row["uri"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        access_token_ttl=row["access_token_ttl"],
        created_at=row["created_at"],
    )


async def insert_resource(
    connection: Connection,
    *,
    uri: str,
    name: str,
    scopes: tuple[str, ...],
    access_token_ttl: int | None,
    now: datetime,
) -> Resource | None:
    """Store a new resource; None if one with this URI exists."""
    row = await connection.fetchrow(
        "INSERT INTO resources (uri, name, scopes, access_token_ttl, created_at)"  # noqa: S608 - constants only
        f" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (uri) DO NOTHING RETURNING {_COLUMNS}",
        uri,
        name,
        list(scopes),
        access_token_ttl,
        now,
    )
    return _resource(row) if row is not None else None


async def list_resources(connection: Connection) -> list[Resource]:
    """Every resource, by URI."""
    rows = await connection.fetch(f"SELECT {_COLUMNS} FROM resources ORDER BY uri")  # noqa: S608 - constants only
    return [_resource(row) for row in rows]


async def find_resource(connection: Connection, resource_id: UUID) -> Resource | None:
    """The resource with this id; None if unknown."""
    row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM resources WHERE id = $1", resource_id)  # noqa: S608 - constants only
    return _resource(row) if row is not None else None


async def find_by_uri(connection: Connection, uri: str) -> Resource | None:
    """The resource with exactly this URI; None if unknown."""
    row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM resources WHERE uri = $1", uri)  # noqa: S608 - constants only
    return _resource(row) if row is not None else None


async def update_resource(
    connection: Connection,
    resource_id: UUID,
    *,
    name: str | None,
    scopes: tuple[str, ...] | None,
    access_token_ttl: int | None,
    clear_ttl: bool,
) -> Resource | None:
    """Change the given fields (None keeps one; `clear_ttl` drops the lifetime); None if the
    resource is unknown. The URI never changes: it is what issued tokens carry."""
    row = await connection.fetchrow(
        "UPDATE resources SET name = coalesce($2, name), scopes = coalesce($3, scopes),"  # noqa: S608 - constants only
        " access_token_ttl = CASE WHEN $5 THEN NULL ELSE coalesce($4, access_token_ttl) END"
        f" WHERE id = $1 RETURNING {_COLUMNS}",
        resource_id,
        name,
        list(scopes) if scopes is not None else None,
        access_token_ttl,
        clear_ttl,
    )
    return _resource(row) if row is not None else None


async def delete_resource(connection: Connection, resource_id: UUID) -> Resource | None:
    """Delete the resource and (by cascade) every client's grant to it; None if unknown."""
    row = await connection.fetchrow(
        f"DELETE FROM resources WHERE id = $1 RETURNING {_COLUMNS}",  # noqa: S608 - constants only
        resource_id,
    )
    return _resource(row) if row is not None else None


async def put_grant(
    connection: Connection,
    *,
    client_id: str,
    resource_id: UUID,
    kind: GrantKind,
    scopes: tuple[str, ...],
    now: datetime,
) -> bool:
    """Grant (or re-grant with new scopes) a client a kind of use of a resource; False if the
    client or the resource is unknown."""
    try:
        status = await connection.execute(
            "INSERT INTO client_resources (client_id, resource_id, kind, scopes, created_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id, resource_id, kind)"
            " DO UPDATE SET scopes = EXCLUDED.scopes",
            client_id,
            resource_id,
            kind.value,
            list(scopes),
            now,
        )
    except asyncpg.ForeignKeyViolationError:
        return False
    return rows_affected(status) == 1


async def delete_grant(
    connection: Connection, *, client_id: str, resource_id: UUID, kind: GrantKind
) -> bool:
    """Take a grant back; False if there was none."""
    status = await connection.execute(
        "DELETE FROM client_resources WHERE client_id = $1 AND resource_id = $2 AND kind = $3",
        client_id,
        resource_id,
        kind.value,
    )
    return rows_affected(status) == 1


async def list_client_grants(connection: Connection, client_id: str) -> list[ClientGrant]:
    """Every grant of the client, by resource URI and kind."""
    rows = await connection.fetch(
        f"SELECT g.client_id, g.kind, g.scopes AS granted, {_JOINED_COLUMNS}"  # noqa: S608 - constants only
        " FROM client_resources g JOIN resources r ON r.id = g.resource_id"
        " WHERE g.client_id = $1 ORDER BY r.uri, g.kind",
        client_id,
    )
    return [_grant(row) for row in rows]


async def find_grant(
    connection: Connection, *, client_id: str, uri: str, kind: GrantKind
) -> ClientGrant | None:
    """The client's grant of `kind` toward the resource with this URI; None if there is none."""
    row = await connection.fetchrow(
        f"SELECT g.client_id, g.kind, g.scopes AS granted, {_JOINED_COLUMNS}"  # noqa: S608 - constants only
        " FROM client_resources g JOIN resources r ON r.id = g.resource_id"
        " WHERE g.client_id = $1 AND r.uri = $2 AND g.kind = $3",
        client_id,
        uri,
        kind.value,
    )
    return _grant(row) if row is not None else None


def _grant(row: asyncpg.Record) -> ClientGrant:
    return ClientGrant(
        client_id=row["client_id"],
        resource=_resource(row),
        kind=GrantKind(row["kind"]),
        scopes=tuple(row["granted"]),
    )
