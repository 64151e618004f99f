"""Resources (RFC 8707) under the admin API: registered, listed, changed, deleted, each change
audited; bad input refused with nothing written."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings
from tokenrota_server.db.resources import GrantKind

from tests.admin_support import admin_client
from tests.audience_support import create_resource, grant
from tests.oauth_support import create_client

ORDERS = "https://orders.example/api"


async def test_a_resource_is_created_listed_read_changed_and_deleted(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Every operation of /admin/resources answers the resource as it stands."""
    _, admin = await admin_client(client, db, settings)

    created = await create_resource(client, admin, ORDERS, "orders:write", "orders:read")
    listed = await client.get("/admin/resources", headers=admin)
    read = await client.get(f"/admin/resources/{created['id']}", headers=admin)
    patched = await client.patch(
        f"/admin/resources/{created['id']}",
        json={"name": "Orders", "access_token_ttl": 60},
        headers=admin,
    )
    deleted = await client.delete(f"/admin/resources/{created['id']}", headers=admin)
    gone = await client.get(f"/admin/resources/{created['id']}", headers=admin)

    assert created["uri"] == ORDERS
    assert created["scopes"] == ["orders:read", "orders:write"]
    assert created["access_token_ttl"] is None
    assert listed.json() == {"resources": [created]}
    assert read.json() == created
    assert patched.status_code == 200
    assert patched.json() == {**created, "name": "Orders", "access_token_ttl": 60}
    assert deleted.status_code == 204
    assert gone.status_code == 404


async def test_every_change_is_audited_with_its_actor(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Create, change and delete each leave one audit event naming the admin client."""
    client_id, admin = await admin_client(client, db, settings)
    created = await create_resource(client, admin, ORDERS, "orders:read")
    await client.patch(f"/admin/resources/{created['id']}", json={"scopes": []}, headers=admin)
    await client.delete(f"/admin/resources/{created['id']}", headers=admin)

    rows = await db.fetch("SELECT actor, action, target FROM audit_events ORDER BY id")

    assert [(row["actor"], row["action"], row["target"]) for row in rows] == [
        (f"client:{client_id}", action, f"resource:{created['id']}")
        for action in ("resource_created", "resource_updated", "resource_deleted")
    ]


async def test_deleting_a_resource_deletes_the_clients_grants_to_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """No grant outlives its resource: a resource registered again later starts with none."""
    _, admin = await admin_client(client, db, settings)
    client_id, _ = await create_client(db, settings)
    created = await create_resource(client, admin, ORDERS, "orders:read")
    await grant(db, client_id, ORDERS, GrantKind.EXCHANGE, "orders:read")

    await client.delete(f"/admin/resources/{created['id']}", headers=admin)
    await create_resource(client, admin, ORDERS, "orders:read")

    assert await db.fetchval("SELECT count(*) FROM client_resources") == 0


@pytest.mark.parametrize(
    "uri", ["http://[::1]:8000/api", "https://[2001:db8::7]/orders", "http://[::ffff:127.0.0.1]"]
)
async def test_a_uri_whose_host_is_an_ip_literal_is_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, uri: str
) -> None:
    """RFC 3986's IP-literal: a service listening on an IPv6 address names its APIs so."""
    _, admin = await admin_client(client, db, settings)

    response = await client.post(
        "/admin/resources", json={"uri": uri, "name": "x", "scopes": []}, headers=admin
    )

    assert response.status_code == 201, response.text
    assert await db.fetchval("SELECT uri FROM resources") == uri


@pytest.mark.parametrize(
    "uri",
    [
        "/api",  # relative
        "orders.example/api",  # no scheme
        "https://orders.example/api#frag",  # a fragment
        "https://orders.example/a b",  # a space
        "https://orders.example/\u00e9",  # not ASCII
        "https://orders.example/" + "a" * 512,  # too long
        "https://orders.example/[x]",  # brackets that are not an IP literal host
        "https://[::1/api",  # an IP literal not closed
        "https://[]/api",  # an empty IP literal
        "urn:[::1]",  # brackets without "//"
        "",
        None,
        7,
    ],
)
async def test_a_uri_that_is_not_absolute_without_a_fragment_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, uri: object
) -> None:
    """422 invalid_input, and no resource exists."""
    _, admin = await admin_client(client, db, settings)

    response = await client.post(
        "/admin/resources", json={"uri": uri, "name": "x", "scopes": []}, headers=admin
    )

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
    assert await db.fetchval("SELECT count(*) FROM resources") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"uri": "urn:example:orders", "name": "", "scopes": []},
        {"uri": "urn:example:orders", "name": "x", "scopes": ["a b"]},
        {"uri": "urn:example:orders", "name": "x", "scopes": [], "access_token_ttl": 0},
        {"uri": "urn:example:orders", "name": "x", "scopes": [], "access_token_ttl": 901},
        {"uri": "urn:example:orders", "name": "x", "scopes": [], "access_token_ttl": True},
        {"uri": "urn:example:orders", "name": "x", "scopes": [], "owner": "me"},
        {"uri": "token-service", "name": "the service itself", "scopes": []},
    ],
)
async def test_bad_fields_are_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, body: object
) -> None:
    """A blank name, a bad scope, a lifetime past ACCESS_TOKEN_TTL, an unknown field, the
    service's own audience: 422, nothing written."""
    _, admin = await admin_client(client, db, settings)

    response = await client.post("/admin/resources", json=body, headers=admin)

    assert response.status_code == 422, response.text
    assert await db.fetchval("SELECT count(*) FROM resources") == 0


async def test_a_taken_uri_is_refused_and_the_uri_never_changes(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The URI is what tokens carry: unique, and fixed once registered."""
    _, admin = await admin_client(client, db, settings)
    created = await create_resource(client, admin, ORDERS)

    again = await client.post(
        "/admin/resources", json={"uri": ORDERS, "name": "x", "scopes": []}, headers=admin
    )
    moved = await client.patch(
        f"/admin/resources/{created['id']}", json={"uri": "https://else.example"}, headers=admin
    )

    assert again.status_code == 422
    assert moved.status_code == 422
    assert await db.fetchval("SELECT uri FROM resources") == ORDERS


async def test_unknown_and_malformed_ids_are_not_found(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """404 for an unknown id and for one that is no id at all."""
    _, admin = await admin_client(client, db, settings)

    unknown = await client.get(f"/admin/resources/{uuid.uuid4()}", headers=admin)
    malformed = await client.delete("/admin/resources/not-an-id", headers=admin)

    assert (unknown.status_code, malformed.status_code) == (404, 404)


async def test_a_token_without_admin_reads_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """A client token without `admin`: 403; none: 401; nothing written."""
    _, other = await admin_client(client, db, settings, scope="read")

    refused = await client.post(
        "/admin/resources", json={"uri": ORDERS, "name": "x", "scopes": []}, headers=other
    )
    anonymous = await client.get("/admin/resources")

    assert (refused.status_code, anonymous.status_code) == (403, 401)
    assert await db.fetchval("SELECT count(*) FROM resources") == 0
