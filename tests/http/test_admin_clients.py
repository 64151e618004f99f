"""OAuth clients over the admin API: who may call it, creation with the secret shown once,
changes, rotation with a grace period, deletion, and the audit event of each change."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings
from tokenrota_server.db.pagination import encode_cursor
from tokenrota_server.oauth_clients import CLIENTS_QUERY

from tests.admin_support import admin_client, bearer, insert_users
from tests.oauth_support import claims_of, client_token
from tests.support import FakeClock, login, register_and_login

# Fixed, not random: pytest-xdist workers must collect the same test ids. No test creates it.
SOME_ID = "0f3c9d2e7a5b41c6"
SOME_RESOURCE_ID = "7a1c3e5f-2b4d-4f6a-8c0e-1d3f5a7b9c2e"
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/clients", None),
    ("POST", "/admin/clients", {"name": "billing"}),
    ("GET", f"/admin/clients/{SOME_ID}", None),
    ("PATCH", f"/admin/clients/{SOME_ID}", {"disabled": True}),
    ("DELETE", f"/admin/clients/{SOME_ID}", None),
    ("POST", f"/admin/clients/{SOME_ID}/secret", {"grace_seconds": 60}),
    ("GET", f"/admin/clients/{SOME_ID}/grants", None),
    ("PUT", f"/admin/clients/{SOME_ID}/grants/{SOME_RESOURCE_ID}/token", {"scopes": []}),
    ("DELETE", f"/admin/clients/{SOME_ID}/grants/{SOME_RESOURCE_ID}/token", None),
]


async def everything(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a client call could change or write."""
    snapshot = {}
    for table in (
        "clients",
        "revoked_access_tokens",
        "revocations",
        "audit_events",
        "client_resources",
    ):
        rows = await db.fetch(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
        snapshot[table] = [tuple(row) for row in rows]
    return snapshot


async def create(client: httpx.AsyncClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/admin/clients", json={"name": "billing", **body}, headers=admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def events(db: asyncpg.Connection, action: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT actor, target, details FROM audit_events WHERE action = $1 ORDER BY id", action
        )
    )


def test_the_route_list_covers_every_client_route() -> None:
    """A new route must join ENDPOINTS, so the refusal matrix below covers it."""
    from tokenrota_server.http import oauth_clients as client_routes

    served = {
        (method, route.path) for route in client_routes.routes for method in route.methods or ()
    }
    listed = {
        (
            method,
            path.replace(SOME_ID, "{client_id}")
            .replace(SOME_RESOURCE_ID, "{resource_id}")
            .replace("/token", "/{kind}"),
        )
        for method, path, _ in ENDPOINTS
    }

    assert {key for key in served if key[0] != "HEAD"} == listed


@pytest.mark.parametrize(
    ("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS]
)
async def test_every_endpoint_refuses_every_caller_but_an_enabled_admin_client(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    """No token 401; a client without admin 403 insufficient_scope; a user whose role grants
    admin, with an everyday token (not for the admin API's audience), and a disabled admin
    client 403 invalid_token. Nothing is written."""
    await db.execute("INSERT INTO roles (name, scopes) VALUES ('ops', '{admin}')")
    user, _ = await register_and_login(client)
    await db.execute(
        "INSERT INTO user_roles (user_id, role) VALUES ($1, 'ops')", uuid.UUID(user["id"])
    )
    pair = await login(client, user["email"])
    assert claims_of(pair["access_token"])["scope"] == "admin"
    _, reader = await admin_client(client, db, settings, scope="read")
    disabled_id, disabled = await admin_client(client, db, settings)
    await db.execute("UPDATE clients SET disabled_at = now() WHERE client_id = $1", disabled_id)
    before = await everything(db)

    anonymous = await client.request(method, path, json=body)
    as_user = await client.request(method, path, json=body, headers=bearer(pair))
    as_reader = await client.request(method, path, json=body, headers=reader)
    as_disabled = await client.request(method, path, json=body, headers=disabled)

    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "missing_token"
    assert as_reader.status_code == 403, as_reader.text
    assert as_reader.json()["error"] == "insufficient_scope"
    for refused in (as_user, as_disabled):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "invalid_token"
    assert await everything(db) == before


async def test_a_created_client_gets_its_secret_once_and_it_works(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    admin_id, admin = await admin_client(client, db, settings)

    created = await create(client, admin, scopes=["write", "read", "read"])
    shown = await client.get(f"/admin/clients/{created['client_id']}", headers=admin)
    listed = await client.get("/admin/clients", headers=admin)

    assert created["scopes"] == ["read", "write"]
    assert created["disabled"] is False
    assert created["previous_secret_expires_at"] is None
    secret = created.pop("client_secret")
    assert shown.json() == created
    assert shown.headers["cache-control"] == "no-store"
    assert created in listed.json()["clients"]
    assert secret not in shown.text + listed.text
    stored = await db.fetchval(
        "SELECT secret_hash FROM clients WHERE client_id = $1", created["client_id"]
    )
    assert stored.startswith("$argon2id$")
    token = await client_token(client, created["client_id"], secret)
    assert token.status_code == 200
    assert claims_of(token.json()["access_token"])["scope"] == "read write"
    [event] = await events(db, "client_created")
    assert event["actor"] == f"client:{admin_id}"
    assert event["target"] == f"client:{created['client_id']}"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 101},
        {"name": "line\nbreak"},
        {"name": 7},
        {"name": "ok", "scopes": "read"},
        {"name": "ok", "scopes": ["has space"]},
        {"name": "ok", "secret": "mine"},
        {"name": "ok", "client_id": "chosen"},
    ],
)
async def test_a_bad_creation_is_422_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, body: dict[str, Any]
) -> None:
    _, admin = await admin_client(client, db, settings)
    before = await everything(db)

    response = await client.post("/admin/clients", json=body, headers=admin)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert await everything(db) == before


async def test_patch_changes_name_and_scopes_and_audits_what_changed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin, scopes=["read"])
    path = f"/admin/clients/{created['client_id']}"

    renamed = await client.patch(path, json={"name": "ledger", "scopes": ["a", "b"]}, headers=admin)
    unchanged = await client.patch(path, json={"name": "ledger"}, headers=admin)

    assert renamed.status_code == 200
    assert renamed.json()["name"] == "ledger"
    assert renamed.json()["scopes"] == ["a", "b"]
    assert unchanged.status_code == 200
    [event] = await events(db, "client_updated")
    assert event["details"] == '{"name": true, "scopes": {"after": ["a", "b"], "before": ["read"]}}'
    token = await client_token(client, created["client_id"], created["client_secret"])
    assert claims_of(token.json()["access_token"])["scope"] == "a b"


async def test_disabling_refuses_the_client_at_once_and_enabling_lets_it_back(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin, scopes=["admin"])
    path = f"/admin/clients/{created['client_id']}"
    held = await client_token(client, created["client_id"], created["client_secret"])
    held_header = {"Authorization": f"Bearer {held.json()['access_token']}"}

    disabled = await client.patch(path, json={"disabled": True}, headers=admin)
    refused_token = await client_token(client, created["client_id"], created["client_secret"])
    refused_call = await client.get("/admin/clients", headers=held_header)
    fed = await db.fetchval(
        "SELECT count(*) FROM revocations WHERE client_id = $1", created["client_id"]
    )
    enabled = await client.patch(path, json={"disabled": False}, headers=admin)
    again = await client_token(client, created["client_id"], created["client_secret"])

    assert disabled.json()["disabled"] is True
    assert refused_token.status_code == 401
    assert refused_call.status_code == 403
    assert fed == 1
    assert enabled.json()["disabled"] is False
    assert again.status_code == 200
    details = [event["details"] for event in await events(db, "client_updated")]
    assert details == ['{"disabled": true}', '{"disabled": false}']


@pytest.mark.parametrize(
    "body", [{}, {"disabled": "yes"}, {"name": ""}, {"scopes": [1]}, {"owner": "me"}]
)
async def test_a_bad_patch_is_422_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, body: dict[str, Any]
) -> None:
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin)
    before = await everything(db)

    response = await client.patch(
        f"/admin/clients/{created['client_id']}", json=body, headers=admin
    )

    assert response.status_code == 422, response.text
    assert await everything(db) == before


@pytest.mark.parametrize("client_id", ["nobody", "%00", "x" * 200, SOME_ID])
async def test_an_unknown_or_malformed_client_id_is_not_found(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, client_id: str
) -> None:
    _, admin = await admin_client(client, db, settings)
    before = await everything(db)

    responses = [
        await client.get(f"/admin/clients/{client_id}", headers=admin),
        await client.patch(f"/admin/clients/{client_id}", json={"name": "n"}, headers=admin),
        await client.delete(f"/admin/clients/{client_id}", headers=admin),
        await client.post(f"/admin/clients/{client_id}/secret", headers=admin),
    ]

    assert [response.status_code for response in responses] == [404] * 4
    assert await everything(db) == before


async def test_rotation_keeps_the_old_secret_for_the_grace_period_only(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """Both secrets work during the grace period; after it, only the new one."""
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin)
    client_id, old = created["client_id"], created["client_secret"]

    rotated = await client.post(
        f"/admin/clients/{client_id}/secret", json={"grace_seconds": 600}, headers=admin
    )
    new = rotated.json()["client_secret"]
    during = [await client_token(client, client_id, secret) for secret in (old, new)]
    clock.advance(601)
    after = [await client_token(client, client_id, secret) for secret in (old, new)]

    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    assert new != old
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert [response.status_code for response in during] == [200, 200]
    assert [response.status_code for response in after] == [401, 200]
    [event] = await events(db, "client_secret_rotated")
    assert event["details"] == '{"grace_seconds": 600}'
    stored = str(await everything(db))
    assert old not in stored
    assert new not in stored


async def test_rotation_without_grace_ends_the_old_secret_and_any_earlier_grace(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin)
    client_id, first = created["client_id"], created["client_secret"]
    path = f"/admin/clients/{client_id}/secret"
    second = (await client.post(path, json={"grace_seconds": 600}, headers=admin)).json()

    third = await client.post(path, headers=admin)

    assert third.status_code == 200
    assert third.json()["previous_secret_expires_at"] is None
    statuses = [
        (await client_token(client, client_id, secret)).status_code
        for secret in (first, second["client_secret"], third.json()["client_secret"])
    ]
    assert statuses == [401, 401, 200]


@pytest.mark.parametrize(
    "body",
    [
        {"grace_seconds": -1},
        {"grace_seconds": 604801},
        {"grace_seconds": 1.5},
        {"grace_seconds": "60"},
        {"grace_seconds": True},
        {"grace": 60},
    ],
)
async def test_a_grace_outside_the_cap_is_422_and_rotates_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, body: dict[str, Any]
) -> None:
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin)
    before = await everything(db)

    response = await client.post(
        f"/admin/clients/{created['client_id']}/secret", json=body, headers=admin
    )

    assert response.status_code == 422, response.text
    assert await everything(db) == before
    works = await client_token(client, created["client_id"], created["client_secret"])
    assert works.status_code == 200


async def test_a_disabled_client_gets_no_new_secret(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin)
    path = f"/admin/clients/{created['client_id']}"
    await client.patch(path, json={"disabled": True}, headers=admin)

    response = await client.post(f"{path}/secret", headers=admin)

    assert response.status_code == 404
    assert await events(db, "client_secret_rotated") == []


async def test_deleting_a_client_refuses_its_tokens_and_names_it_in_the_feed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin, scopes=["admin"])
    held = await client_token(client, created["client_id"], created["client_secret"])
    held_header = {"Authorization": f"Bearer {held.json()['access_token']}"}

    deleted = await client.delete(f"/admin/clients/{created['client_id']}", headers=admin)
    again = await client.delete(f"/admin/clients/{created['client_id']}", headers=admin)
    refused = await client.get("/admin/clients", headers=held_header)

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert refused.status_code == 403
    assert (
        await db.fetchval(
            "SELECT count(*) FROM revocations WHERE client_id = $1", created["client_id"]
        )
        == 1
    )
    assert len(await events(db, "client_deleted")) == 1


async def test_clients_page_by_cursor_and_a_forged_cursor_is_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    for _ in range(3):
        await create(client, admin)

    first = await client.get("/admin/clients?limit=2", headers=admin)
    second = await client.get(
        f"/admin/clients?limit=2&cursor={first.json()['next_cursor']}", headers=admin
    )
    forged = await client.get("/admin/clients?cursor=WyJ4Il0", headers=admin)
    await insert_users(db, 2)
    users_cursor = (await client.get("/admin/users?limit=1", headers=admin)).json()["next_cursor"]
    elsewhere = await client.get(f"/admin/clients?cursor={users_cursor}", headers=admin)

    ids = [c["client_id"] for c in first.json()["clients"] + second.json()["clients"]]
    assert len(ids) == len(set(ids)) == 4  # three and the admin itself
    assert second.json()["next_cursor"] is None
    assert forged.status_code == 400
    assert elsewhere.status_code == 400


async def test_concurrent_rotations_lose_no_secret(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Two rotations at once queue on the row: the last one's secret and the one it replaced
    work, the first secret does not; neither caller holds a secret that never worked."""
    _, admin = await admin_client(client, db, settings)
    created = await create(client, admin)
    client_id, original = created["client_id"], created["client_secret"]
    path = f"/admin/clients/{client_id}/secret"

    first, second = await asyncio.gather(
        *(client.post(path, json={"grace_seconds": 600}, headers=admin) for _ in range(2))
    )

    assert (first.status_code, second.status_code) == (200, 200)
    rotated = [first.json()["client_secret"], second.json()["client_secret"]]
    statuses = [
        (await client_token(client, client_id, secret)).status_code
        for secret in (original, *rotated)
    ]
    assert statuses == [401, 200, 200]
    assert len(await events(db, "client_secret_rotated")) == 2


@pytest.mark.parametrize(
    "key",
    [
        ["0001-01-01T00:00:00+14:00", "abc"],
        ["9999-12-31T23:59:59-14:00", "abc"],
        ["2026-01-01T00:00:00", "abc"],
        ["2026-01-01T00:00:00Z", "has\x00nul"],
        ["2026-01-01T00:00:00Z", "x" * 200],
        ["2026-01-01T00:00:00Z"],
        [1, 2],
        [],
    ],
)
async def test_a_forged_clients_cursor_is_400_never_500(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, key: list[Any]
) -> None:
    _, admin = await admin_client(client, db, settings)
    cursor = encode_cursor(CLIENTS_QUERY, key)

    response = await client.get(f"/admin/clients?cursor={cursor}", headers=admin)

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
