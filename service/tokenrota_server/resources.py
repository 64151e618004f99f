"""Resources (RFC 8707): the APIs a token may be minted for, and clients' grants to them.

A token for a resource has `aud` = its URI and carries only the scopes it defines; a token
for no resource is the service's own. `resolve_target` is the one step every token endpoint
takes with a request's `resource` (/login, /refresh, /oauth/token, and any endpoint that
mints a user's pair). The administration below commits each change with its audit event;
deleting a resource deletes every client's grant to it, and the tokens already minted for it
live out their (short) lifetimes, refused by nothing but their own audience's servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from tokenrota_server.config import Settings
from tokenrota_server.db import audit, oauth_clients, roles
from tokenrota_server.db import resources as resources_table
from tokenrota_server.db.audit import AuditAction
from tokenrota_server.db.pool import Connection
from tokenrota_server.db.resources import ClientGrant, GrantKind, Resource
from tokenrota_server.errors import InvalidInput, InvalidTarget, NotFound

MAX_NAME_LENGTH = 200
# The admin API's scope: a client's (client credentials), or a person's from a role.
ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class Target:
    """Where an access token is going: the resource's URI (`aud`), the scopes it defines
    and its lifetime, if shorter than the default."""

    uri: str
    scopes: frozenset[str]
    access_token_ttl: int | None

    @classmethod
    def of(cls, resource: Resource) -> Target:
        return cls(resource.uri, frozenset(resource.scopes), resource.access_token_ttl)

    def narrow(self, scope: str) -> str:
        """The scopes of `scope` (space-separated) that this resource defines, sorted."""
        return " ".join(sorted(set(scope.split()) & self.scopes))


def admin_target(settings: Settings) -> Target:
    """The admin API as a resource: built in (no operator registers it, so none can shadow
    it), its only scope `admin`, which a person holds from a role."""
    return Target(settings.admin_api_audience, frozenset({ADMIN_SCOPE}), None)


async def resolve_target(pool: asyncpg.Pool, settings: Settings, raw: object) -> Target | None:
    """The target of a request's `resource` parameter: None when absent or naming the service
    itself, the built-in `admin_target` for ADMIN_AUDIENCE; raise `InvalidTarget` for anything
    but one registered absolute URI (a list, a relative URI, a fragment, an unknown resource)."""
    if raw is None or raw == settings.token_audience:
        return None
    if raw == settings.admin_api_audience:
        return admin_target(settings)
    uri = resources_table.check_uri(raw)
    async with pool.acquire() as connection:
        found = await resources_table.find_by_uri(connection, uri)
    if found is None:
        raise InvalidTarget()
    return Target.of(found)


# -- administration (admin API and CLI) ---------------------------------------------------------


def check_resource_fields(
    body: dict[str, Any], settings: Settings, *, creating: bool
) -> dict[str, Any]:
    """The checked fields of a resource's JSON (`uri`, `name`, `scopes`, `access_token_ttl`);
    raise `InvalidInput`. At creation `uri` and `name` are required; afterwards `uri` is fixed.
    """
    allowed = {"name", "scopes", "access_token_ttl"} | ({"uri"} if creating else set())
    others = set(body) - allowed
    if others:
        raise InvalidInput(f"Unexpected field; a resource has {', '.join(sorted(allowed))}.")
    fields: dict[str, Any] = {}
    if creating:
        try:
            fields["uri"] = resources_table.check_uri(body.get("uri"))
        except InvalidTarget:
            raise InvalidInput(
                "'uri' must be an absolute URI (scheme:...) without a fragment, at most"
                f" {resources_table.MAX_URI_LENGTH} characters of RFC 3986."
            ) from None
        if fields["uri"] == settings.token_audience:
            raise InvalidInput("'uri' is the service's own audience.")
        if fields["uri"] == settings.admin_api_audience:
            raise InvalidInput("'uri' is the admin API's audience (ADMIN_AUDIENCE), built in.")
    if creating or "name" in body:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise InvalidInput(f"'name' must be 1 to {MAX_NAME_LENGTH} characters.")
        if not name.isprintable():
            raise InvalidInput("'name' must be printable text.")
        fields["name"] = name
    if creating or "scopes" in body:
        fields["scopes"] = roles.check_scopes(body.get("scopes", []))
    if "access_token_ttl" in body:
        ttl = body["access_token_ttl"]
        if ttl is not None and (
            not isinstance(ttl, int)
            or isinstance(ttl, bool)
            or not 1 <= ttl <= settings.access_token_ttl
        ):
            # Never longer than the default: verifiers bound every access token's lifetime by it.
            raise InvalidInput(
                f"'access_token_ttl' must be null or 1 to {settings.access_token_ttl} seconds."
            )
        fields["access_token_ttl"] = ttl
    return fields


async def create_resource(
    pool: asyncpg.Pool, fields: dict[str, Any], *, actor: str, now: datetime
) -> Resource:
    """Register a resource from checked `fields`; raise `InvalidInput` if its URI is taken."""
    async with pool.acquire() as connection, connection.transaction():
        created = await resources_table.insert_resource(
            connection,
            uri=fields["uri"],
            name=fields["name"],
            scopes=fields["scopes"],
            access_token_ttl=fields.get("access_token_ttl"),
            now=now,
        )
        if created is None:
            raise InvalidInput("A resource with this URI exists.")
        await audit.record(
            connection,
            AuditAction.RESOURCE_CREATED,
            actor=actor,
            now=now,
            target=f"resource:{created.id}",
            details=_details(created),
        )
    return created


async def list_resources(pool: asyncpg.Pool) -> list[Resource]:
    """Every resource."""
    async with pool.acquire() as connection:
        return await resources_table.list_resources(connection)


async def get_resource(pool: asyncpg.Pool, resource_id: UUID) -> Resource:
    """One resource; raise `NotFound`."""
    async with pool.acquire() as connection:
        found = await resources_table.find_resource(connection, resource_id)
    if found is None:
        raise NotFound("No such resource.")
    return found


async def update_resource(
    pool: asyncpg.Pool, resource_id: UUID, fields: dict[str, Any], *, actor: str, now: datetime
) -> Resource:
    """Change a resource's name, scopes or lifetime; raise `NotFound`. Tokens minted from now
    on follow the change; those already minted keep what they say until they expire."""
    async with pool.acquire() as connection, connection.transaction():
        updated = await resources_table.update_resource(
            connection,
            resource_id,
            name=fields.get("name"),
            scopes=fields.get("scopes"),
            access_token_ttl=fields.get("access_token_ttl"),
            clear_ttl="access_token_ttl" in fields and fields["access_token_ttl"] is None,
        )
        if updated is None:
            raise NotFound("No such resource.")
        await audit.record(
            connection,
            AuditAction.RESOURCE_UPDATED,
            actor=actor,
            now=now,
            target=f"resource:{updated.id}",
            details=_details(updated),
        )
    return updated


async def delete_resource(
    pool: asyncpg.Pool, resource_id: UUID, *, actor: str, now: datetime
) -> None:
    """Delete a resource and every client's grant to it; raise `NotFound`."""
    async with pool.acquire() as connection, connection.transaction():
        deleted = await resources_table.delete_resource(connection, resource_id)
        if deleted is None:
            raise NotFound("No such resource.")
        await audit.record(
            connection,
            AuditAction.RESOURCE_DELETED,
            actor=actor,
            now=now,
            target=f"resource:{deleted.id}",
            details={"uri": deleted.uri},
        )


async def _find(connection: Connection, resource: UUID | str) -> Resource | None:
    """A resource by its id (the admin API's paths) or its URI (the CLI's arguments)."""
    if isinstance(resource, UUID):
        return await resources_table.find_resource(connection, resource)
    return await resources_table.find_by_uri(connection, resource)


async def grant_client(
    pool: asyncpg.Pool,
    *,
    client_id: str,
    resource: UUID | str,
    kind: GrantKind,
    scopes: tuple[str, ...],
    actor: str,
    now: datetime,
) -> ClientGrant:
    """Grant a client a kind of use of a resource (its id or URI), with `scopes` (each one
    the resource defines; none for `serves`), replacing the scopes of a grant of that kind it
    had; raise `NotFound` or `InvalidInput`."""
    async with pool.acquire() as connection, connection.transaction():
        found = await _find(connection, resource)
        if found is None:
            raise NotFound("No such resource.")
        if await oauth_clients.find_client(connection, client_id) is None:
            raise NotFound("No client has this id.")
        if kind is GrantKind.SERVES and scopes:
            raise InvalidInput("Serving a resource grants no scopes.")
        undefined = sorted(set(scopes) - set(found.scopes))
        if undefined:
            raise InvalidInput("The resource defines no scope " + " ".join(undefined)[:200] + ".")
        await resources_table.put_grant(
            connection,
            client_id=client_id,
            resource_id=found.id,
            kind=kind,
            scopes=scopes,
            now=now,
        )
        await audit.record(
            connection,
            AuditAction.CLIENT_RESOURCE_GRANTED,
            actor=actor,
            now=now,
            target=f"client:{client_id}",
            details={"resource": found.uri, "kind": kind.value, "scopes": list(scopes)},
        )
    return ClientGrant(client_id=client_id, resource=found, kind=kind, scopes=scopes)


async def revoke_client_grant(
    pool: asyncpg.Pool,
    *,
    client_id: str,
    resource: UUID | str,
    kind: GrantKind,
    actor: str,
    now: datetime,
) -> None:
    """Take a client's grant to a resource (its id or URI) back; raise `NotFound` if it had
    none. Tokens already minted under it live out their lifetimes."""
    async with pool.acquire() as connection, connection.transaction():
        found = await _find(connection, resource)
        if found is None or not await resources_table.delete_grant(
            connection, client_id=client_id, resource_id=found.id, kind=kind
        ):
            raise NotFound("The client has no such grant.")
        await audit.record(
            connection,
            AuditAction.CLIENT_RESOURCE_REVOKED,
            actor=actor,
            now=now,
            target=f"client:{client_id}",
            details={"resource": found.uri, "kind": kind.value},
        )


async def list_client_grants(pool: asyncpg.Pool, client_id: str) -> list[ClientGrant]:
    """Every grant of the client, by resource URI and kind; raise `NotFound` for no client."""
    async with pool.acquire() as connection:
        if await oauth_clients.find_client(connection, client_id) is None:
            raise NotFound("No client has this id.")
        return await resources_table.list_client_grants(connection, client_id)


def _details(resource: Resource) -> dict[str, Any]:
    return {
        "uri": resource.uri,
        "name": resource.name,
        "scopes": list(resource.scopes),
        "access_token_ttl": resource.access_token_ttl,
    }
