"""The admin API: who may call it, users and their roles and sessions, roles, erasure under
concurrent refreshes, keyset pagination, and the audit events each change writes."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from tokenrota_server.cli import admin as admin_commands
from tokenrota_server.config import Settings
from tokenrota_server.db import account_tokens, pagination, users

from tests.admin_support import admin_client, bearer, insert_users
from tests.mail_support import queued_token
from tests.oauth_support import claims_of
from tests.support import PASSWORD, FakeClock, login, register, register_and_login

# Fixed, not random: pytest-xdist workers must collect the same test ids. No test creates it.
SOME_ID = "4d6f2a90-3b1e-4c57-9a8d-0e2f6b7c1a35"
SOME_RESOURCE_ID = "7a1c3e5f-2b4d-4f6a-8c0e-1d3f5a7b9c2e"
OTHER_ID = "00000000-0000-4000-8000-000000000002"
SOME_SESSION_ID = "5e3b1c7a-9d2f-4a6e-8b0c-3f5d7e9a1b2c"
# Erase racing a token's spending deadlocked about once in 150 tries before both locked the
# user's row first.
ERASE_RACE_ROUNDS = 300
# Every endpoint, with a body where it takes one.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/users", None),
    ("GET", f"/admin/users/{SOME_ID}", None),
    ("DELETE", f"/admin/users/{SOME_ID}", None),
    ("POST", f"/admin/users/{SOME_ID}/disable", None),
    ("POST", f"/admin/users/{SOME_ID}/enable", None),
    ("PUT", f"/admin/users/{SOME_ID}/roles", {"roles": []}),
    ("GET", f"/admin/users/{SOME_ID}/sessions", None),
    ("DELETE", f"/admin/users/{SOME_ID}/sessions", None),
    ("DELETE", f"/admin/users/{SOME_ID}/sessions/{SOME_SESSION_ID}", None),
    ("GET", f"/admin/users/{SOME_ID}/factors", None),
    ("DELETE", f"/admin/users/{SOME_ID}/factors/{OTHER_ID}", None),
    ("GET", "/admin/roles", None),
    ("PUT", "/admin/roles/ops", {"scopes": ["read"]}),
    ("DELETE", "/admin/roles/ops", None),
    ("GET", "/admin/audit", None),
    ("GET", "/admin/resources", None),
    ("POST", "/admin/resources", {"uri": "https://api.example/", "name": "api", "scopes": []}),
    ("GET", f"/admin/resources/{SOME_RESOURCE_ID}", None),
    ("PATCH", f"/admin/resources/{SOME_RESOURCE_ID}", {"name": "renamed"}),
    ("DELETE", f"/admin/resources/{SOME_RESOURCE_ID}", None),
]


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


async def everything(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row an admin call could change or write."""
    snapshot = {}
    for table in (
        "users",
        "sessions",
        "refresh_tokens",
        "roles",
        "user_roles",
        "audit_events",
        "resources",
    ):
        rows = await db.fetch(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
        snapshot[table] = [tuple(row) for row in rows]
    return snapshot


async def test_the_route_list_covers_every_admin_route(client: httpx.AsyncClient) -> None:
    """A new admin route must join ENDPOINTS, so the refusal matrix below covers it."""
    from tokenrota_server.http import admin as admin_routes

    served = {
        (method, route.path) for route in admin_routes.routes for method in route.methods or ()
    }
    listed = {
        (
            method,
            path.replace(SOME_ID, "{user_id}")
            .replace(SOME_RESOURCE_ID, "{resource_id}")
            .replace(OTHER_ID, "{factor_id}")
            .replace(SOME_SESSION_ID, "{session_id}")
            .replace("/ops", "/{name}"),
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
    """No token 401; a client without admin 403 insufficient_scope; a user holding every role
    (one grants admin) with an everyday token (not for the admin API's audience), a disabled
    admin client's token and a revoked one 403 invalid_token. Nothing is written by any of
    them. (Operators' own tokens: test_admin_persons.py.)"""
    await db.execute(
        "INSERT INTO roles (name, scopes) VALUES ('ops', '{admin}'), ('all', '{admin,read,write}')"
    )
    user, _ = await register_and_login(client)
    await db.execute(
        "INSERT INTO user_roles (user_id, role) SELECT $1, name FROM roles", uuid.UUID(user["id"])
    )
    user_pair = await login(client, user["email"])
    assert "admin" in claims_of(user_pair["access_token"])["scope"].split()
    _, reader = await admin_client(client, db, settings, scope="read write")
    disabled_id, disabled = await admin_client(client, db, settings)
    await db.execute("UPDATE clients SET disabled_at = now() WHERE client_id = $1", disabled_id)
    revoked_id, revoked = await admin_client(client, db, settings)
    token = revoked["Authorization"].split()[1]
    await db.execute(
        "INSERT INTO revoked_access_tokens (jti, client_id, expires_at)"
        " VALUES ($1, $2, now() + interval '1 hour')",
        claims_of(token)["jti"],
        revoked_id,
    )
    before = await everything(db)

    anonymous = await call(client, method, path, body, {})
    as_user = await call(client, method, path, body, bearer(user_pair))
    as_reader = await call(client, method, path, body, reader)
    as_disabled = await call(client, method, path, body, disabled)
    as_revoked = await call(client, method, path, body, revoked)

    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "missing_token"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert as_reader.status_code == 403, as_reader.text
    assert as_reader.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in as_reader.headers["www-authenticate"]
    for refused in (as_user, as_disabled, as_revoked):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "invalid_token"
    assert await everything(db) == before


async def test_a_client_that_loses_the_admin_scope_is_refused_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    client_id, admin = await admin_client(client, db, settings)
    allowed = await client.get("/admin/roles", headers=admin)

    await db.execute("UPDATE clients SET scopes = '{read}' WHERE client_id = $1", client_id)
    refused = await client.get("/admin/roles", headers=admin)

    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["error"] == "invalid_token"


async def test_an_expired_admin_token_is_refused_as_expired(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    _, admin = await admin_client(client, db, settings)

    clock.advance(settings.access_token_ttl + settings.jwt_leeway + 1)
    refused = await client.get("/admin/users", headers=admin)

    assert refused.status_code == 403
    assert refused.json()["error"] == "token_expired"


async def test_a_user_is_shown_with_roles_state_and_live_sessions(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    user, _ = await register_and_login(client)
    await login(client, user["email"])
    await client.put("/admin/roles/support", json={"scopes": ["read"]}, headers=admin)
    await client.put(f"/admin/users/{user['id']}/roles", json={"roles": ["support"]}, headers=admin)

    shown = await client.get(f"/admin/users/{user['id']}", headers=admin)

    assert shown.status_code == 200
    assert shown.headers["cache-control"] == "no-store"
    body = shown.json()
    assert body == {
        "id": user["id"],
        "email": user["email"],
        "created_at": body["created_at"],
        "disabled": False,
        "email_verified": False,
        "roles": ["support"],
        "live_sessions": 2,
        "app_metadata": {},
        "last_sign_in_at": body["last_sign_in_at"],
        "sessions": body["sessions"],
    }
    assert len(body["sessions"]) == 2
    assert body["last_sign_in_at"] == max(session["created_at"] for session in body["sessions"])
    assert set(body["sessions"][0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "name",
    }


@pytest.mark.parametrize("user_id", ["42", "not-a-uuid", "%00", SOME_ID])
async def test_a_bad_or_unknown_user_id_is_not_found(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, user_id: str
) -> None:
    _, admin = await admin_client(client, db, settings)
    before = await everything(db)

    responses = [
        await client.get(f"/admin/users/{user_id}", headers=admin),
        await client.delete(f"/admin/users/{user_id}", headers=admin),
        await client.post(f"/admin/users/{user_id}/disable", headers=admin),
        await client.put(f"/admin/users/{user_id}/roles", json={"roles": []}, headers=admin),
        await client.delete(f"/admin/users/{user_id}/sessions", headers=admin),
    ]

    assert [r.status_code for r in responses] == [404] * 5
    assert {r.json()["error"] for r in responses} == {"not_found"}
    assert await everything(db) == before


async def test_disable_ends_every_session_and_enable_lets_the_user_back(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    client_id, admin = await admin_client(client, db, settings)
    user, pair = await register_and_login(client)
    other = await login(client, user["email"])

    disabled = await client.post(f"/admin/users/{user['id']}/disable", headers=admin)
    refused = [
        await client.post("/refresh", json={"refresh_token": p["refresh_token"]})
        for p in (pair, other)
    ]
    login_refused = await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    enabled = await client.post(f"/admin/users/{user['id']}/enable", headers=admin)
    relogged = await client.post("/login", json={"email": user["email"], "password": PASSWORD})

    assert disabled.status_code == 204
    assert [r.status_code for r in refused] == [403, 403]
    assert login_refused.status_code == 401
    assert enabled.status_code == 204
    assert relogged.status_code == 200
    events = await db.fetch(
        "SELECT actor, action, target, details FROM audit_events WHERE user_id = $1 ORDER BY id",
        uuid.UUID(user["id"]),
    )
    assert [(e["actor"], e["action"], e["target"]) for e in events] == [
        (f"client:{client_id}", "user_disabled", user["id"]),
        (f"client:{client_id}", "user_enabled", user["id"]),
    ]
    assert json.loads(events[0]["details"]) == {"sessions_revoked": 2}


async def test_the_api_and_the_cli_disable_a_user_by_one_path(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """POST /admin/users/{id}/disable and `tokenrota disable-user` leave the same trace: the
    sessions ended, one audit event each (by their actor) and one security log line each."""
    caplog.set_level(logging.INFO, logger="tokenrota.security")
    client_id, admin = await admin_client(client, db, settings)
    by_api, _ = await register_and_login(client)
    by_cli, _ = await register_and_login(client)

    disabled = await client.post(f"/admin/users/{by_api['id']}/disable", headers=admin)
    status = await admin_commands.disable_user(settings, by_cli["email"])

    assert (disabled.status_code, status) == (204, 0)
    assert capsys.readouterr().out == "user disabled; 1 sessions ended\n"
    logged = [
        (str(getattr(record, "user_id", None)), getattr(record, "sessions", None))
        for record in caplog.records
        if record.getMessage() == "user disabled"
    ]
    assert logged == [(by_api["id"], 1), (by_cli["id"], 1)]
    events = await db.fetch(
        "SELECT actor, user_id::text, details FROM audit_events WHERE action = 'user_disabled'"
        " ORDER BY id"
    )
    assert [(e["actor"], e["user_id"], json.loads(e["details"])) for e in events] == [
        (f"client:{client_id}", by_api["id"], {"sessions_revoked": 1}),
        ("cli", by_cli["id"], {"sessions_revoked": 1}),
    ]


async def test_disable_voids_open_reset_and_verification_links(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """A reset link and a verification link mailed before a disable do not work after the
    user is enabled again: disabling ends them with the sessions."""
    _, admin = await admin_client(client, db, settings)
    user, pair = await register_and_login(client)
    await client.post("/email/verification", headers=bearer(pair))
    verification = await queued_token(db, settings, user["email"])
    await client.post("/password/forgot", json={"email": user["email"]})
    reset = await queued_token(db, settings, user["email"])

    await client.post(f"/admin/users/{user['id']}/disable", headers=admin)
    await client.post(f"/admin/users/{user['id']}/enable", headers=admin)
    reset_answer = await client.post(
        "/password/reset", json={"token": reset, "new_password": "a new horse battery"}
    )
    verify_answer = await client.post("/email/verify", json={"token": verification})

    assert (reset_answer.status_code, reset_answer.json()["error"]) == (400, "invalid_token")
    assert (verify_answer.status_code, verify_answer.json()["error"]) == (400, "invalid_token")
    assert await db.fetchval("SELECT email_verified_at FROM users") is None
    assert (
        await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    ).status_code == 200


async def test_sessions_are_listed_and_revoked_all_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    user, pair = await register_and_login(client)
    await login(client, user["email"])

    listed = await client.get(f"/admin/users/{user['id']}/sessions", headers=admin)
    revoked = await client.delete(f"/admin/users/{user['id']}/sessions", headers=admin)
    after = await client.get(f"/admin/users/{user['id']}/sessions", headers=admin)
    refresh = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    assert listed.status_code == 200
    assert len(listed.json()["sessions"]) == 2
    assert revoked.status_code == 204
    assert after.json() == {"sessions": []}
    assert refresh.status_code == 403
    reasons = await db.fetch("SELECT DISTINCT revoke_reason FROM sessions")
    assert [row["revoke_reason"] for row in reasons] == ["admin"]
    assert (
        await db.fetchval("SELECT count(*) FROM audit_events WHERE action = 'sessions_revoked'")
        == 1
    )


async def test_one_session_is_revoked_and_the_others_live_on(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """A lost laptop: that session ends, the phone's lives; another user's session, an ended
    one and a malformed id are 404 with nothing written."""
    _, admin = await admin_client(client, db, settings)
    user, laptop = await register_and_login(client)
    phone = await login(client, user["email"])
    stranger, theirs = await register_and_login(client)
    sessions = (await client.get(f"/admin/users/{user['id']}/sessions", headers=admin)).json()
    laptop_id = claims_of(laptop["access_token"])["sid"]
    assert laptop_id in {session["id"] for session in sessions["sessions"]}
    their_id = await db.fetchval("SELECT id FROM sessions WHERE user_id = $1", UUID(stranger["id"]))

    revoked = await client.delete(f"/admin/users/{user['id']}/sessions/{laptop_id}", headers=admin)
    before = await everything(db)
    refused = [
        await client.delete(f"/admin/users/{user['id']}/sessions/{path}", headers=admin)
        for path in (laptop_id, their_id, "not-a-uuid", SOME_SESSION_ID)
    ]
    after = await everything(db)

    assert revoked.status_code == 204
    assert [r.status_code for r in refused] == [404] * 4
    assert after == before
    lost = await client.post("/refresh", json={"refresh_token": laptop["refresh_token"]})
    kept = await client.post("/refresh", json={"refresh_token": phone["refresh_token"]})
    assert lost.status_code == 403
    assert kept.status_code == 200
    stranger_refresh = await client.post(
        "/refresh", json={"refresh_token": theirs["refresh_token"]}
    )
    assert stranger_refresh.status_code == 200
    event = await db.fetchrow(
        "SELECT actor, user_id, details FROM audit_events WHERE action = 'sessions_revoked'"
    )
    assert event["user_id"] == UUID(user["id"])
    assert json.loads(event["details"]) == {"sessions_revoked": 1, "session_id": laptop_id}


async def test_the_session_listing_shows_the_name_the_user_gave(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """A session the user labelled (PATCH /sessions/{id}) is listed with its name; others null."""
    _, admin = await admin_client(client, db, settings)
    user, pair = await register_and_login(client)
    await login(client, user["email"])
    own = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"]
    named_id = next(session["id"] for session in own if session["current"])
    named = await client.patch(
        f"/sessions/{named_id}", json={"name": "Work laptop"}, headers=bearer(pair)
    )

    listed = await client.get(f"/admin/users/{user['id']}/sessions", headers=admin)

    assert named.status_code == 200
    assert listed.status_code == 200
    names = {session["id"]: session["name"] for session in listed.json()["sessions"]}
    assert len(names) == 2
    assert names.pop(named_id) == "Work laptop"
    assert list(names.values()) == [None]
    assert set(listed.json()["sessions"][0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "name",
    }


async def test_roles_are_created_replaced_listed_and_deleted_unless_held(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    user = await register(client)

    created = await client.put(
        "/admin/roles/support", json={"scopes": ["write", "read", "read"]}, headers=admin
    )
    replaced = await client.put("/admin/roles/support", json={"scopes": ["read"]}, headers=admin)
    await client.put(f"/admin/users/{user['id']}/roles", json={"roles": ["support"]}, headers=admin)
    held = await client.delete("/admin/roles/support", headers=admin)
    listed = await client.get("/admin/roles", headers=admin)
    await client.put(f"/admin/users/{user['id']}/roles", json={"roles": []}, headers=admin)
    deleted = await client.delete("/admin/roles/support", headers=admin)
    again = await client.delete("/admin/roles/support", headers=admin)

    assert created.status_code == 201
    assert created.json()["scopes"] == ["read", "write"]
    assert replaced.status_code == 200
    assert replaced.json()["scopes"] == ["read"]
    assert held.status_code == 409
    assert held.json()["error"] == "role_in_use"
    assert [(r["name"], r["scopes"]) for r in listed.json()["roles"]] == [("support", ["read"])]
    assert deleted.status_code == 204
    assert again.status_code == 404
    actions = [
        row["action"] for row in await db.fetch("SELECT action FROM audit_events ORDER BY id")
    ]
    assert actions == ["role_put", "role_put", "user_roles_set", "user_roles_set", "role_deleted"]


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["two words"]},
        {"scopes": ['a"quote']},
        {"scopes": ["back\\slash"]},
        {"scopes": [""]},
        {"scopes": ["é"]},
        {"scopes": ["x" * 129]},
        {"scopes": "read"},
        {"scopes": [1]},
        {"scopes": ["s"] * 101},
        {"scopes": ["read"], "extra": 1},
        {},
    ],
)
async def test_a_role_with_an_invalid_scope_is_refused_with_nothing_written(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, body: dict[str, Any]
) -> None:
    _, admin = await admin_client(client, db, settings)

    response = await client.put("/admin/roles/support", json=body, headers=admin)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
    assert await db.fetchval("SELECT count(*) FROM roles") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 0


@pytest.mark.parametrize("name", ["Upper", "a" * 65, "-dash", "sp%20ace", "semi;colon"])
async def test_a_bad_role_name_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, name: str
) -> None:
    _, admin = await admin_client(client, db, settings)

    put = await client.put(f"/admin/roles/{name}", json={"scopes": []}, headers=admin)
    deleted = await client.delete(f"/admin/roles/{name}", headers=admin)

    assert put.status_code == 422
    assert deleted.status_code == 404
    assert await db.fetchval("SELECT count(*) FROM roles") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"roles": ["support", "nosuchrole"]},
        {"roles": ["x" * 65]},
        {"roles": "support"},
        {"roles": [None]},
        {"roles": ["support"] * 101},
        {"role": ["support"]},
    ],
)
async def test_setting_an_unknown_or_bad_role_writes_nothing_not_even_an_audit_event(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, body: dict[str, Any]
) -> None:
    _, admin = await admin_client(client, db, settings)
    await client.put("/admin/roles/support", json={"scopes": ["read"]}, headers=admin)
    await client.put("/admin/roles/old", json={"scopes": ["old"]}, headers=admin)
    user = await register(client)
    await client.put(f"/admin/users/{user['id']}/roles", json={"roles": ["old"]}, headers=admin)
    before = await everything(db)

    response = await client.put(f"/admin/users/{user['id']}/roles", json=body, headers=admin)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert await everything(db) == before


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"[]", "application/json", 400),
        (b"\xff", "application/json", 400),
        (b'{"roles": []}', "text/plain", 415),
        (b'{"roles": [], "roles": []}', "application/json", 400),
    ],
)
async def test_a_bad_body_is_refused_before_anything_is_written(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    content: bytes,
    content_type: str,
    status: int,
) -> None:
    _, admin = await admin_client(client, db, settings)
    user = await register(client)
    before = await everything(db)

    response = await client.put(
        f"/admin/users/{user['id']}/roles",
        content=content,
        headers={**admin, "Content-Type": content_type},
    )

    assert response.status_code == status
    assert await everything(db) == before


async def list_all(
    client: httpx.AsyncClient, admin: dict[str, str], query: str = "", limit: int = 3
) -> list[str]:
    """Walk every page of GET /admin/users; the emails in order."""
    emails: list[str] = []
    cursor = None
    while True:
        params = f"?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(f"/admin/users{params}", headers=admin)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["users"]) <= limit
        emails.extend(user["email"] for user in page["users"])
        cursor = page["next_cursor"]
        if cursor is None:
            return emails


async def test_users_are_paged_by_keyset_and_searched_by_email_prefix_in_any_case(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    await insert_users(db, 7, prefix="alice")
    await insert_users(db, 2, prefix="Bob")
    await insert_users(db, 1, prefix="al_x")

    everyone = await list_all(client, admin)
    alices = await list_all(client, admin, "&email=ALIce")
    bobs = await list_all(client, admin, "&email=b", limit=50)
    underscore = await list_all(client, admin, "&email=al_")
    percent = await list_all(client, admin, "&email=%25")

    assert len(everyone) == len(set(everyone)) == 10
    assert len(alices) == 7
    assert all(email.startswith("alice-") for email in alices)
    assert sorted(bobs) == ["Bob-1@example.com", "Bob-2@example.com"]
    assert underscore == ["al_x-1@example.com"]
    assert percent == []


async def test_paging_stays_whole_while_users_are_inserted_concurrently(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, database_url: str
) -> None:
    """Every user there before the walk is seen exactly once, whatever is inserted meanwhile."""
    _, admin = await admin_client(client, db, settings)
    existing = {str(user_id) for user_id in await insert_users(db, 60, prefix="old")}
    writer = await asyncpg.connect(database_url)

    async def walk() -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            params = "?limit=7" + (f"&cursor={cursor}" if cursor else "")
            page = (await client.get(f"/admin/users{params}", headers=admin)).json()
            seen.extend(user["id"] for user in page["users"])
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    async def insert() -> None:
        for batch in range(20):
            await insert_users(writer, 3, prefix=f"new{batch}")
            await asyncio.sleep(0)

    try:
        seen, _ = await asyncio.gather(walk(), insert())
    finally:
        await writer.close()

    assert len(seen) == len(set(seen))
    assert existing <= set(seen)


@pytest.mark.parametrize("cursor", ["garbage", "e30", "W10", "!!!", "x" * 600, "WyJhYmMiLDFd"])
async def test_a_forged_cursor_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, cursor: str
) -> None:
    _, admin = await admin_client(client, db, settings)

    users_page = await client.get(f"/admin/users?cursor={cursor}", headers=admin)
    audit_page = await client.get(f"/admin/audit?cursor={cursor}", headers=admin)

    assert users_page.status_code == 400
    assert users_page.json()["error"] == "invalid_request"
    assert audit_page.status_code == 400


async def test_a_cursor_from_another_query_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    await insert_users(db, 3, prefix="alice")
    cursor = (await client.get("/admin/users?limit=1&email=alice", headers=admin)).json()[
        "next_cursor"
    ]

    other_prefix = await client.get(f"/admin/users?email=bob&cursor={cursor}", headers=admin)
    audit = await client.get(f"/admin/audit?cursor={cursor}", headers=admin)
    same = await client.get(f"/admin/users?email=alice&cursor={cursor}", headers=admin)

    assert other_prefix.status_code == 400
    assert audit.status_code == 400
    assert same.status_code == 200


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("users", ["0001-01-01T00:00:00+14:00", SOME_ID]),
        ("users", ["9999-12-31T23:59:59-14:00", SOME_ID]),
        ("users", ["2026-01-01T00:00:00+00:00", 5]),
        ("audit", [2**63]),
        ("audit", [-(2**63) - 1]),
        ("audit", [10**30]),
    ],
)
async def test_a_cursor_of_our_grammar_with_a_key_out_of_range_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, path: str, key: list[Any]
) -> None:
    """A time that leaves datetime's range in UTC, an id past a bigint or of the wrong type: 400."""
    _, admin = await admin_client(client, db, settings)
    cursor = pagination.encode_cursor(f"{path}:", key)

    response = await client.get(f"/admin/{path}?cursor={cursor}", headers=admin)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "٣"])
async def test_the_limit_is_bounded(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, limit: str
) -> None:
    _, admin = await admin_client(client, db, settings)

    response = await client.get("/admin/users", params={"limit": limit}, headers=admin)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"


async def test_the_email_prefix_search_uses_the_index(
    db: asyncpg.Connection,
) -> None:
    """The plan of the very query the API runs, generic as a prepared statement's plan
    becomes, is an index scan on users_email_lower_prefix_idx over 20,000 users."""
    await insert_users(db, 20_000, prefix="someone")
    await insert_users(db, 5, prefix="target")
    await db.execute("ANALYZE users")
    sql, arguments = users.users_page_query(email_prefix="target", after=None, limit=51)
    await db.execute("SET plan_cache_mode = force_generic_plan")

    statement = await db.prepare("EXPLAIN (FORMAT JSON) " + sql)
    plan = json.dumps(json.loads(await statement.fetchval(*arguments)))

    assert "users_email_lower_prefix_idx" in plan
    assert '"Seq Scan"' not in plan


async def test_erasing_a_user_leaves_no_row_behind_and_the_audit_keeps_only_the_id(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    await client.put("/admin/roles/support", json={"scopes": ["read"]}, headers=admin)
    user, pair = await register_and_login(client)
    await client.post("/login", json={"email": user["email"], "password": "wrong password!"})
    await client.put(f"/admin/users/{user['id']}/roles", json={"roles": ["support"]}, headers=admin)
    user_id = uuid.UUID(user["id"])

    erased = await client.delete(f"/admin/users/{user['id']}", headers=admin)
    again = await client.delete(f"/admin/users/{user['id']}", headers=admin)
    refresh = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    assert erased.status_code == 204
    assert again.status_code == 404
    assert refresh.status_code == 403
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", user_id) == 0
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user_id) == 0
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 0
    assert await db.fetchval("SELECT count(*) FROM user_roles") == 0
    assert await db.fetchval("SELECT count(*) FROM login_attempts WHERE scope = 'email'") == 0
    log = await db.fetch("SELECT * FROM audit_events WHERE user_id = $1 ORDER BY id", user_id)
    assert [row["action"] for row in log] == ["user_roles_set", "user_erased"]
    assert user["email"] not in json.dumps(
        [dict(row) for row in await db.fetch("SELECT * FROM audit_events")], default=str
    )


async def test_erasing_a_user_under_concurrent_refreshes_leaves_nothing_and_no_500(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Refresh chains of several sessions run while the user is erased: each refresh is 200
    or 403, the erase 204, and no session or token of the user is left."""
    _, admin = await admin_client(client, db, settings)
    user = await register(client)
    pairs = [await login(client, user["email"]) for _ in range(6)]
    statuses: list[int] = []

    async def keep_refreshing(pair: dict[str, Any]) -> None:
        token = pair["refresh_token"]
        for _ in range(20):
            response = await client.post("/refresh", json={"refresh_token": token})
            statuses.append(response.status_code)
            if response.status_code != 200:
                return
            token = response.json()["refresh_token"]

    async def erase() -> httpx.Response:
        await asyncio.sleep(0.01)
        return await client.delete(f"/admin/users/{user['id']}", headers=admin)

    *_, erased = await asyncio.gather(*(keep_refreshing(pair) for pair in pairs), erase())

    assert erased.status_code == 204
    assert set(statuses) <= {200, 403}
    assert 403 in statuses
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 0


@pytest.mark.slow  # ERASE_RACE_ROUNDS races: seconds
@pytest.mark.parametrize(
    ("purpose", "path", "body"),
    [
        ("email_verification", "/email/verify", {}),
        ("password_reset", "/password/reset", {"new_password": "a fresh passphrase 9"}),
    ],
)
async def test_erasing_a_user_racing_their_account_token_never_deadlocks(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    purpose: str,
    path: str,
    body: dict[str, str],
) -> None:
    """Erase and the spending of the user's verification or reset token, at once, many times:
    both take the user's row first, so one waits for the other; never a deadlock (500)."""
    _, admin = await admin_client(client, db, settings)
    statuses: set[tuple[int, int]] = set()

    for round_number in range(ERASE_RACE_ROUNDS):
        (user_id,) = await insert_users(db, 1, prefix=f"race-{round_number}")
        token, digest = account_tokens.new_token()
        await db.execute(
            "INSERT INTO account_tokens (token_digest, purpose, user_id, created_at, expires_at)"
            " VALUES ($1, $2, $3, now(), now() + interval '1 hour')",
            digest,
            purpose,
            user_id,
        )

        erased, spent = await asyncio.gather(
            client.delete(f"/admin/users/{user_id}", headers=admin),
            client.post(path, json={"token": token, **body}),
        )
        statuses.add((erased.status_code, spent.status_code))

    assert {erase for erase, _ in statuses} == {204}
    assert {spend for _, spend in statuses} <= {204, 400}
    assert await db.fetchval("SELECT count(*) FROM users WHERE email LIKE 'race-%'") == 0


@pytest.mark.slow  # ERASE_RACE_ROUNDS races: seconds
async def test_erasing_a_user_racing_their_login_never_deadlocks(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Erase and a login that forgives an earlier failed attempt (a row of the email's
    throttle, which erase deletes too), at once, many times: never a deadlock (500)."""
    _, admin = await admin_client(client, db, settings)
    user = await register(client)
    password_hash = await db.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(user["id"])
    )
    statuses: set[tuple[int, int]] = set()

    for round_number in range(ERASE_RACE_ROUNDS):
        email = f"login-race-{round_number}@example.com"
        user_id = await db.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id",
            email,
            password_hash,
        )
        failed = await client.post("/login", json={"email": email, "password": "not it at all"})
        assert failed.status_code == 401

        erased, logged_in = await asyncio.gather(
            client.delete(f"/admin/users/{user_id}", headers=admin),
            client.post("/login", json={"email": email, "password": PASSWORD}),
        )
        statuses.add((erased.status_code, logged_in.status_code))

    assert {erase for erase, _ in statuses} == {204}
    assert {login for _, login in statuses} <= {200, 401, 403}


async def test_the_audit_log_pages_newest_first_and_filters_by_user(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    client_id, admin = await admin_client(client, db, settings)
    first, second = await register(client), await register(client)
    for user in (first, second, first):
        await client.post(f"/admin/users/{user['id']}/disable", headers=admin)

    page = (await client.get("/admin/audit?limit=2", headers=admin)).json()
    rest = (
        await client.get(f"/admin/audit?limit=2&cursor={page['next_cursor']}", headers=admin)
    ).json()
    mine = (await client.get(f"/admin/audit?user_id={first['id']}", headers=admin)).json()
    bad = await client.get("/admin/audit?user_id=nope", headers=admin)

    ids = [event["id"] for event in page["events"] + rest["events"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 3
    assert rest["next_cursor"] is None
    assert {e["actor"] for e in page["events"]} == {f"client:{client_id}"}
    assert set(page["events"][0]) == {
        "id",
        "at",
        "actor",
        "action",
        "target",
        "user_id",
        "ip",
        "request_id",
        "details",
    }
    assert page["events"][0]["request_id"]
    assert [e["user_id"] for e in mine["events"]] == [first["id"], first["id"]]
    assert bad.status_code == 422


async def test_a_login_racing_the_erasure_of_its_user_is_refused_not_a_500(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    """The credentials are read, then the user is erased before the session is stored: the
    login answers 401 invalid_credentials as for an unknown email, and nothing is left."""
    user = await register(client)
    eraser = await asyncpg.connect(database_url)
    try:
        erasing = eraser.transaction()
        await erasing.start()
        await eraser.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user["id"]))
        login_call = asyncio.ensure_future(
            client.post("/login", json={"email": user["email"], "password": PASSWORD})
        )
        # The login's lock of the user's row, its first, waits on the deleted row's lock: the
        # race, made certain.
        for _ in range(3000):
            if await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%FROM users WHERE id = $1 FOR UPDATE%'"
            ):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the login never reached the lock of the user's row")
        await erasing.commit()
        response = await login_call
    finally:
        await eraser.close()

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_credentials"
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
