"""Sessions a user can see and end, logout-all and password change (SECURITY.md, "Logout and
sessions"), against a real Postgres."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import PASSWORD, FakeClock, Login, Register, RegisterAndLogin, TableSnapshot


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/refresh", json={"refresh_token": token})


async def test_sessions_lists_live_sessions_and_marks_the_current_one(
    client: httpx.AsyncClient, clock: FakeClock, login: Login, register: Register
) -> None:
    """Each login is one session with its agent and address; only the caller's is current."""
    user = await register(client)
    first = await login(client, user["email"])
    clock.advance(5)
    second = await client.post(
        "/login",
        json={"email": user["email"], "password": PASSWORD},
        headers={"User-Agent": "phone-browser/1.0"},
    )
    await client.post(
        "/logout", json={"refresh_token": (await login(client, user["email"]))["refresh_token"]}
    )

    response = await client.get("/sessions", headers=bearer(first))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    listed = response.json()["sessions"]
    assert len(listed) == 2
    assert {s["current"] for s in listed} == {True, False}
    current = next(s for s in listed if s["current"])
    other = next(s for s in listed if not s["current"])
    assert other["user_agent"] == "phone-browser/1.0"
    assert other["ip"] == "127.0.0.1"
    assert set(current) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "current",
        "name",
    }
    assert second.status_code == 200


async def test_sessions_never_lists_another_users_sessions(
    client: httpx.AsyncClient, register_and_login: RegisterAndLogin
) -> None:
    """Two users each see exactly their own session."""
    _, mine = await register_and_login(client)
    _, theirs = await register_and_login(client)

    listed = (await client.get("/sessions", headers=bearer(mine))).json()["sessions"]
    other = (await client.get("/sessions", headers=bearer(theirs))).json()["sessions"]

    assert len(listed) == 1
    assert len(other) == 1
    assert listed[0]["id"] != other[0]["id"]


async def test_absolute_expiry_is_session_max_age_and_rotation_never_extends_it(
    client: httpx.AsyncClient, clock: FakeClock, settings: Any, register_and_login: RegisterAndLogin
) -> None:
    """expires_at is login + SESSION_MAX_AGE, and stays there through refreshes."""
    _, pair = await register_and_login(client)
    before = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"][0]

    clock.advance(3600)
    pair = (await refresh(client, pair["refresh_token"])).json()
    after = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"][0]

    assert after["expires_at"] == before["expires_at"]
    assert after["last_used_at"] > before["last_used_at"]


@pytest.mark.parametrize("path", ["/sessions", "/logout/all"])
async def test_session_routes_need_a_bearer_token(client: httpx.AsyncClient, path: str) -> None:
    """No token is 401 with WWW-Authenticate; a garbage one is 403."""
    method = client.get if path == "/sessions" else client.post

    missing = await method(path)
    garbage = await method(path, headers={"Authorization": "Bearer not.a.token"})

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert garbage.status_code == 403
    assert garbage.json()["error"] == "invalid_token"


async def test_revoking_a_session_kills_its_refresh_and_access_tokens(
    client: httpx.AsyncClient, db: asyncpg.Connection, login: Login, register: Register
) -> None:
    """DELETE /sessions/{id}: 204, reason user_revoked; that session's tokens stop at once."""
    user = await register(client)
    mine = await login(client, user["email"])
    other = await login(client, user["email"])
    listed = (await client.get("/sessions", headers=bearer(mine))).json()["sessions"]
    other_id = next(s["id"] for s in listed if not s["current"])

    response = await client.delete(f"/sessions/{other_id}", headers=bearer(mine))

    assert response.status_code == 204
    assert (
        await db.fetchval("SELECT revoke_reason FROM sessions WHERE id = $1", uuid.UUID(other_id))
        == "user_revoked"
    )
    assert (await refresh(client, other["refresh_token"])).status_code == 403
    assert (await client.get("/profile", headers=bearer(other))).status_code == 403
    assert (await client.get("/profile", headers=bearer(mine))).status_code == 200


@pytest.mark.parametrize(
    "target", ["foreign", "unknown", "not-a-uuid", "revoked", "%20", "1' OR '1'='1"]
)
async def test_revoking_a_session_not_your_own_is_404_and_revokes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    target: str,
    login: Login,
    register: Register,
    register_and_login: RegisterAndLogin,
    table_snapshot: TableSnapshot,
) -> None:
    """Another user's session, an unknown id, a non-UUID, an ended one: 404, nothing written."""
    user = await register(client)
    mine = await login(client, user["email"])
    ended = await login(client, user["email"])
    _, theirs = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": ended["refresh_token"]})
    ids = {
        "foreign": (await client.get("/sessions", headers=bearer(theirs))).json()["sessions"][0][
            "id"
        ],
        "unknown": str(uuid.uuid4()),
        "revoked": await db.fetchval("SELECT id::text FROM sessions WHERE revoked_at IS NOT NULL"),
    }
    before = await table_snapshot(db)

    response = await client.delete(f"/sessions/{ids.get(target, target)}", headers=bearer(mine))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert await table_snapshot(db) == before
    assert (await client.get("/profile", headers=bearer(theirs))).status_code == 200


async def test_revoking_needs_a_live_session_of_the_caller(
    client: httpx.AsyncClient, login: Login, register: Register
) -> None:
    """An access token of a revoked session cannot revoke anything: 403."""
    user = await register(client)
    mine = await login(client, user["email"])
    other = await login(client, user["email"])
    listed = (await client.get("/sessions", headers=bearer(other))).json()["sessions"]
    await client.post("/logout", json={"refresh_token": mine["refresh_token"]})
    other_id = next(s["id"] for s in listed if s["current"])

    response = await client.delete(f"/sessions/{other_id}", headers=bearer(mine))

    assert response.status_code == 403
    assert (await client.get("/profile", headers=bearer(other))).status_code == 200


async def test_logout_all_revokes_every_session_of_the_user_only(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    login: Login,
    register: Register,
    register_and_login: RegisterAndLogin,
) -> None:
    """POST /logout/all: 204; every session of the caller (the current one too) dies."""
    user = await register(client)
    pairs = [await login(client, user["email"]) for _ in range(3)]
    _, bystander = await register_and_login(client)

    response = await client.post("/logout/all", headers=bearer(pairs[0]))

    assert response.status_code == 204
    reasons = await db.fetch(
        "SELECT revoke_reason FROM sessions WHERE user_id = $1", uuid.UUID(user["id"])
    )
    assert [row["revoke_reason"] for row in reasons] == ["logout_all"] * 3
    for pair in pairs:
        assert (await refresh(client, pair["refresh_token"])).status_code == 403
        assert (await client.get("/profile", headers=bearer(pair))).status_code == 403
    assert (await refresh(client, bystander["refresh_token"])).status_code == 200


async def test_password_change_revokes_other_sessions_and_keeps_this_one(
    client: httpx.AsyncClient, db: asyncpg.Connection, login: Login, register: Register
) -> None:
    """POST /password: 204; the old password stops working, other sessions are revoked."""
    user = await register(client)
    mine = await login(client, user["email"])
    other = await login(client, user["email"])

    response = await client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=bearer(mine),
    )

    assert response.status_code == 204
    assert (await refresh(client, other["refresh_token"])).status_code == 403
    assert (await client.get("/profile", headers=bearer(other))).status_code == 403
    assert (await client.get("/profile", headers=bearer(mine))).status_code == 200
    assert (await refresh(client, mine["refresh_token"])).status_code == 200
    reasons = await db.fetch("SELECT revoke_reason FROM sessions ORDER BY created_at")
    assert sorted(str(row["revoke_reason"]) for row in reasons) == ["None", "password_change"]
    old = await client.post("/login", json={"email": user["email"], "password": PASSWORD})
    assert old.status_code == 401
    await login(client, user["email"], "a brand new passphrase")


@pytest.mark.parametrize(
    ("current", "new", "status", "error"),
    [
        ("wrong password!", "a brand new passphrase", 401, "invalid_credentials"),
        ("x" * 129, "a brand new passphrase", 401, "invalid_credentials"),
        (PASSWORD, "short", 422, "weak_password"),
        (PASSWORD, "x" * 129, 422, "weak_password"),
    ],
)
async def test_password_change_refusals_write_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    current: str,
    new: str,
    status: int,
    error: str,
    login: Login,
    register: Register,
    table_snapshot: TableSnapshot,
) -> None:
    """A wrong current password is 401; a weak new one 422; no session or hash changes."""
    user = await register(client)
    mine = await login(client, user["email"])
    await login(client, user["email"])
    before = await table_snapshot(db)

    response = await client.post(
        "/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(mine),
    )

    assert response.status_code == status
    assert response.json()["error"] == error
    assert await table_snapshot(db) == before


@pytest.mark.parametrize(
    "body", [{}, {"current_password": PASSWORD}, {"current_password": 1, "new_password": "x" * 9}]
)
async def test_password_change_with_missing_fields_is_422(
    client: httpx.AsyncClient, body: dict[str, Any], register_and_login: RegisterAndLogin
) -> None:
    """Fields missing or of the wrong type: 422, before any hashing."""
    _, mine = await register_and_login(client)

    response = await client.post("/password", json=body, headers=bearer(mine))

    assert response.status_code == 422


async def test_password_change_needs_a_bearer_token(client: httpx.AsyncClient) -> None:
    """Without a token: 401, whatever the body."""
    response = await client.post(
        "/password", json={"current_password": PASSWORD, "new_password": "x" * 12}
    )

    assert response.status_code == 401
