"""Roles that require a second factor, and operators managing a user's factors."""

from __future__ import annotations

import asyncpg
import httpx
from jose import jwt
from tokenrota_server.config import Settings

from tests.admin_support import admin_client
from tests.checks import assert_error
from tests.mfa_support import bearer, mfa_login, totp_user
from tests.support import FakeClock, login, register


async def test_a_require_mfa_roles_scopes_go_only_into_aal2_tokens(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> None:
    """A password alone still logs in (never a lock-out), without the role's name and scopes;
    the other role counts either way."""
    _, admin = await admin_client(client, db, settings)
    for name, body in (
        ("payouts", {"scopes": ["payouts:write"], "require_mfa": True}),
        ("reader", {"scopes": ["reports:read"]}),
    ):
        put = await client.put(f"/admin/roles/{name}", json=body, headers=admin)
        assert put.status_code == 201, put.text
    assert put.json()["require_mfa"] is False
    user = await register(client)
    await client.put(
        f"/admin/users/{user['id']}/roles", json={"roles": ["payouts", "reader"]}, headers=admin
    )
    password_only = await login(client, user["email"])

    aal1 = jwt.get_unverified_claims(password_only["access_token"])
    assert aal1["scope"] == "reports:read"
    assert aal1["roles"] == ["reader"]
    listed = await client.get("/admin/roles", headers=admin)
    assert {r["name"]: r["require_mfa"] for r in listed.json()["roles"]} == {
        "payouts": True,
        "reader": False,
    }


async def test_aal2_tokens_carry_the_require_mfa_scopes_through_refresh(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    await client.put(
        "/admin/roles/payouts",
        json={"scopes": ["payouts:write"], "require_mfa": True},
        headers=admin,
    )
    who = await totp_user(client, clock)
    await client.put(
        f"/admin/users/{who.user['id']}/roles", json={"roles": ["payouts"]}, headers=admin
    )

    pair = await mfa_login(client, clock, who)
    refreshed = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    for tokens in (pair, refreshed.json()):
        claims = jwt.get_unverified_claims(tokens["access_token"])
        assert claims["scope"] == "payouts:write"
        assert claims["roles"] == ["payouts"]


async def test_require_mfa_must_be_a_boolean(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)

    for body in ({"scopes": [], "require_mfa": "yes"}, {"scopes": [], "other": 1}):
        response = await client.put("/admin/roles/r", json=body, headers=admin)
        assert_error(response, 422, "invalid_input")
    assert await db.fetchval("SELECT count(*) FROM roles") == 0


async def test_an_operator_lists_and_removes_a_factor_and_the_users_sessions_end(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> None:
    """A lost phone: the factor goes, every session of the user is revoked, it is audited, and
    the password alone logs in again."""
    client_id, admin = await admin_client(client, db, settings)
    who = await totp_user(client, clock)
    pair = await mfa_login(client, clock, who)
    user_id = who.user["id"]

    listed = await client.get(f"/admin/users/{user_id}/factors", headers=admin)
    removed = await client.delete(f"/admin/users/{user_id}/factors/{who.factor_id}", headers=admin)

    assert [f["id"] for f in listed.json()["factors"]] == [who.factor_id]
    assert removed.status_code == 204
    assert_error(await client.get("/profile", headers=bearer(pair)), 403, "invalid_token")
    event = await db.fetchrow(
        "SELECT actor, details FROM audit_events WHERE action = 'mfa_factor_removed'"
    )
    assert event["actor"] == f"client:{client_id}"
    await login(client, who.email)


async def test_an_operator_cannot_remove_another_users_factor_through_a_wrong_id(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> None:
    _, admin = await admin_client(client, db, settings)
    owner = await totp_user(client, clock)
    other = await register(client)

    for path in (
        f"/admin/users/{other['id']}/factors/{owner.factor_id}",
        f"/admin/users/{owner.user['id']}/factors/not-a-uuid",
        f"/admin/users/not-a-uuid/factors/{owner.factor_id}",
    ):
        assert_error(await client.delete(path, headers=admin), 404, "not_found")
    assert await db.fetchval("SELECT count(*) FROM mfa_factors") == 1


async def test_the_factor_admin_api_needs_an_admin_token(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    who = await totp_user(client, clock)
    pair = await mfa_login(client, clock, who)

    response = await client.get(f"/admin/users/{who.user['id']}/factors", headers=bearer(pair))

    assert_error(response, 403)
