"""Clients' grants to resources over the admin API (list, put, delete), and a client's DPoP
requirement set at creation or changed later; each change audited, each refusal writing
nothing."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.admin_support import admin_client
from tests.checks import assert_error
from tests.oauth_support import claims_of, client_token

ORDERS = "https://orders.example/api"
# Fixed, not random: pytest-xdist workers must collect the same test ids. No test creates it.
UNKNOWN_RESOURCE_ID = "7a1c3e5f-2b4d-4f6a-8c0e-1d3f5a7b9c2e"


async def everything(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    snapshot = {}
    for table in ("clients", "resources", "client_resources", "audit_events"):
        rows = await db.fetch(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
        snapshot[table] = [tuple(row) for row in rows]
    return snapshot


async def arrange(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """An admin's header, a resource (orders:read, orders:write) and a client (no scopes)."""
    _, admin = await admin_client(client, db, settings)
    resource = await client.post(
        "/admin/resources",
        json={"uri": ORDERS, "name": "Orders", "scopes": ["orders:read", "orders:write"]},
        headers=admin,
    )
    assert resource.status_code == 201, resource.text
    created = await client.post("/admin/clients", json={"name": "billing"}, headers=admin)
    assert created.status_code == 201, created.text
    return admin, resource.json(), created.json()


async def test_a_grant_is_put_listed_used_replaced_and_taken_back(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The grant the API writes is the one /oauth/token honours; a second PUT replaces its
    scopes; DELETE takes it away. Each change is audited with the caller as actor."""
    admin, resource, billing = await arrange(client, db, settings)
    client_id, secret = billing["client_id"], billing["client_secret"]
    path = f"/admin/clients/{client_id}/grants/{resource['id']}/token"

    put = await client.put(path, json={"scopes": ["orders:read"]}, headers=admin)
    listed = await client.get(f"/admin/clients/{client_id}/grants", headers=admin)
    token = await client_token(client, client_id, secret, resource=ORDERS)
    replaced = await client.put(path, json={"scopes": ["orders:write"]}, headers=admin)
    wider = await client_token(client, client_id, secret, resource=ORDERS)
    serves = await client.put(
        f"/admin/clients/{client_id}/grants/{resource['id']}/serves", headers=admin
    )
    deleted = await client.delete(path, headers=admin)
    refused = await client_token(client, client_id, secret, resource=ORDERS)
    after = await client.get(f"/admin/clients/{client_id}/grants", headers=admin)

    grant = {
        "client_id": client_id,
        "resource": ORDERS,
        "resource_id": resource["id"],
        "kind": "token",
        "scopes": ["orders:read"],
    }
    assert (put.status_code, put.json()) == (200, grant)
    assert put.headers["cache-control"] == "no-store"
    assert listed.json() == {"grants": [grant]}
    assert claims_of(token.json()["access_token"])["scope"] == "orders:read"
    assert replaced.json()["scopes"] == ["orders:write"]
    assert claims_of(wider.json()["access_token"])["scope"] == "orders:write"
    assert (serves.status_code, serves.json()["scopes"]) == (200, [])
    assert deleted.status_code == 204
    assert refused.json()["error"] == "invalid_target"
    assert [(g["kind"], g["scopes"]) for g in after.json()["grants"]] == [("serves", [])]
    rows = await db.fetch(
        "SELECT action, actor, details FROM audit_events"
        " WHERE action LIKE 'client_resource_%' ORDER BY id"
    )
    actor = {row["actor"] for row in rows}
    assert [row["action"] for row in rows] == [
        "client_resource_granted",
        "client_resource_granted",
        "client_resource_granted",
        "client_resource_revoked",
    ]
    assert len(actor) == 1
    assert actor.pop().startswith("client:")


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("unknown client", 404, "not_found"),
        ("malformed client id", 404, "not_found"),
        ("unknown resource", 404, "not_found"),
        ("malformed resource id", 404, "not_found"),
        ("unknown kind", 404, "not_found"),
        ("a scope the resource lacks", 422, "invalid_input"),
        ("serves with scopes", 422, "invalid_input"),
        ("scopes not a list", 422, "invalid_input"),
        ("another key", 422, "invalid_input"),
        ("not json", 400, "invalid_request"),
        ("deleting no grant", 404, "not_found"),
    ],
)
async def test_a_bad_grant_is_refused_clearly_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    case: str,
    status: int,
    code: str,
) -> None:
    admin, resource, billing = await arrange(client, db, settings)
    base = f"/admin/clients/{billing['client_id']}/grants"
    good = f"{base}/{resource['id']}/token"
    requests: dict[str, tuple[str, str, dict[str, Any]]] = {
        "unknown client": ("PUT", f"/admin/clients/{'0' * 32}/grants/{resource['id']}/token", {}),
        "malformed client id": ("PUT", f"/admin/clients/no!/grants/{resource['id']}/token", {}),
        "unknown resource": ("PUT", f"{base}/{UNKNOWN_RESOURCE_ID}/token", {}),
        "malformed resource id": ("PUT", f"{base}/not-a-uuid/token", {}),
        "unknown kind": ("PUT", f"{base}/{resource['id']}/owns", {}),
        "a scope the resource lacks": ("PUT", good, {"json": {"scopes": ["admin"]}}),
        "serves with scopes": (
            "PUT",
            f"{base}/{resource['id']}/serves",
            {"json": {"scopes": ["orders:read"]}},
        ),
        "scopes not a list": ("PUT", good, {"json": {"scopes": "orders:read"}}),
        "another key": ("PUT", good, {"json": {"scope": ["orders:read"]}}),
        "not json": (
            "PUT",
            good,
            {"content": b"{", "headers": {**admin, "content-type": "application/json"}},
        ),
        "deleting no grant": ("DELETE", good, {}),
    }
    method, path, extra = requests[case]
    extra.setdefault("headers", admin)
    before = await everything(db)

    answer = await client.request(method, path, **extra)

    assert_error(answer, status, code)
    assert await everything(db) == before


async def test_a_clients_dpop_requirement_is_set_at_creation_and_changed_later(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """`dpop_bound_access_tokens` at POST: its secret alone gets no token; PATCH false: it
    does; PATCH true again: it does not. Each change audited; a non-boolean is 422, writing
    nothing."""
    _, admin = await admin_client(client, db, settings)
    created = await client.post(
        "/admin/clients",
        json={"name": "payments", "dpop_bound_access_tokens": True},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    client_id, secret = body["client_id"], body["client_secret"]
    path = f"/admin/clients/{client_id}"

    bound = await client_token(client, client_id, secret)
    off = await client.patch(path, json={"dpop_bound_access_tokens": False}, headers=admin)
    bearer = await client_token(client, client_id, secret)
    on = await client.patch(path, json={"dpop_bound_access_tokens": True}, headers=admin)
    bound_again = await client_token(client, client_id, secret)
    before = await everything(db)
    bad = await client.patch(path, json={"dpop_bound_access_tokens": "yes"}, headers=admin)
    bad_at_creation = await client.post(
        "/admin/clients", json={"name": "x", "dpop_bound_access_tokens": 1}, headers=admin
    )

    assert body["dpop_bound_access_tokens"] is True
    assert (bound.status_code, bound.json()["error"]) == (400, "invalid_dpop_proof")
    assert (off.status_code, off.json()["dpop_bound_access_tokens"]) == (200, False)
    assert bearer.status_code == 200, bearer.text
    assert on.json()["dpop_bound_access_tokens"] is True
    assert bound_again.json()["error"] == "invalid_dpop_proof"
    assert_error(bad, 422, "invalid_input")
    assert_error(bad_at_creation, 422, "invalid_input")
    assert await everything(db) == before
    rows = await db.fetch(
        "SELECT action, details FROM audit_events WHERE target = $1 ORDER BY id",
        f"client:{client_id}",
    )
    assert [(row["action"], json.loads(row["details"])) for row in rows] == [
        ("client_created", {"scopes": [], "dpop_bound_access_tokens": True}),
        ("client_updated", {"dpop_bound_access_tokens": False}),
        ("client_updated", {"dpop_bound_access_tokens": True}),
    ]
