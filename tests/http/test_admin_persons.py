"""Operators: a person's own token at the admin API. The authorisation matrix (scope, audience,
aal, auth_time, disabled operator, revoked session, a role taken away, a delegated token, a
client's token for the admin audience), every refusal writing nothing, and a good operator
doing real admin actions, audited as `user:<uuid>`."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
from starlette.routing import Route
from tokenrota_server.config import Settings
from tokenrota_server.db.sessions import Strength
from tokenrota_server.http import admin, admin_accounts, metadata, oauth_clients
from tokenrota_server.tokens import TokenCodec

from tests.admin_support import admin_client
from tests.checks import assert_error
from tests.mfa_support import TotpUser, bearer, mfa_login, totp_user
from tests.oauth_support import claims_of, client_token, create_client
from tests.passkey_support import SoftAuthenticator
from tests.support import FakeClock, login, register, serve

# Fixed, not random: pytest-xdist workers must collect the same test ids. No test creates them.
SOME_ID = "4d6f2a90-3b1e-4c57-9a8d-0e2f6b7c1a35"
OTHER_ID = "00000000-0000-4000-8000-000000000002"
PATH_VALUES = {
    "{user_id}": SOME_ID,
    "{resource_id}": SOME_ID,
    "{factor_id}": OTHER_ID,
    "{name}": "ops",
    "{client_id}": "some-client",
}
# Every table an admin call could write.
TABLES = (
    "users",
    "sessions",
    "refresh_tokens",
    "roles",
    "user_roles",
    "audit_events",
    "resources",
    "clients",
    "client_resources",
    "mfa_factors",
    "account_tokens",
    "mail_outbox",
)


def admin_endpoints() -> list[tuple[str, str]]:
    """Every (method, path) the admin API serves, its path parameters filled in."""
    endpoints = []
    for module in (admin, admin_accounts, metadata, oauth_clients):
        for route in module.routes:
            assert isinstance(route, Route)
            path = route.path
            for name, value in PATH_VALUES.items():
                path = path.replace(name, value)
            endpoints += [(method, path) for method in route.methods or () if method != "HEAD"]
    return endpoints


async def everything(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    snapshot = {}
    for table in TABLES:
        rows = await db.fetch(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
        snapshot[table] = [tuple(row) for row in rows]
    return snapshot


async def make_operator(db: asyncpg.Connection, user_id: str, role: str = "ops") -> None:
    """Give the user a role that grants `admin` (and another scope, which admin tokens drop)."""
    await db.execute(
        "INSERT INTO roles (name, scopes) VALUES ($1, '{admin,reports:read}')"
        " ON CONFLICT DO NOTHING",
        role,
    )
    await db.execute(
        "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)", uuid.UUID(user_id), role
    )


async def operator(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> tuple[TotpUser, dict[str, Any]]:
    """A new operator (TOTP, a role with admin) and the token pair of an aal2 login for the
    admin API's audience."""
    who = await totp_user(client, clock)
    await make_operator(db, who.user["id"])
    return who, await mfa_login(client, clock, who, resource=settings.admin_api_audience)


async def test_an_operators_token_is_for_the_admin_api_alone_with_admin_alone(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> None:
    """/login/mfa with resource=ADMIN_AUDIENCE, a resource no one registered: `aud` is the
    admin API's, `scope` only `admin` (the role's other scopes stay out), aal2; the token opens
    none of the service's own routes."""
    who, pair = await operator(client, clock, db, settings)

    claims = claims_of(pair["access_token"])
    profile = await client.get("/profile", headers=bearer(pair))

    assert settings.admin_api_audience == "http://127.0.0.1:8000/admin"
    assert claims["aud"] == settings.admin_api_audience
    assert claims["scope"] == "admin"
    assert claims["acr"] == "aal2"
    assert claims["sub"] == who.user["id"]
    assert_error(profile, 403, "invalid_token")


async def test_the_admin_audience_cannot_be_registered_as_a_resource_nor_asked_by_a_client(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """So it can never be shadowed by a resource of an operator's making (whose scopes a
    client could be granted); client credentials for it are an invalid_target."""
    _, headers = await admin_client(client, db, settings)
    client_id, secret = await create_client(db, settings, scope="admin")
    before = await everything(db)

    registered = await client.post(
        "/admin/resources",
        json={"uri": settings.admin_api_audience, "name": "shadow", "scopes": ["admin"]},
        headers=headers,
    )
    asked = await client_token(client, client_id, secret, resource=settings.admin_api_audience)

    body = assert_error(registered, 422, "invalid_input")
    assert "ADMIN_AUDIENCE" in body["error_description"]
    assert asked.status_code == 400, asked.text
    assert asked.json()["error"] == "invalid_target"
    assert await everything(db) == before


async def test_every_admin_endpoint_refuses_every_caller_but_a_good_operator(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> None:
    """The matrix, on every admin route: each caller is refused with the error that says what
    is missing, and none writes anything."""
    audience = settings.admin_api_audience
    # Too old: an aal2 login ADMIN_MAX_AUTH_AGE + 1 s ago, its session refreshed just now (so
    # its access token is fresh, its auth_time is not).
    _, stale_pair = await operator(client, clock, db, settings)
    clock.advance(settings.admin_max_auth_age + 1)
    refreshed = await client.post(
        "/refresh", json={"refresh_token": stale_pair["refresh_token"], "resource": audience}
    )
    assert refreshed.status_code == 200, refreshed.text
    stale = refreshed.json()
    # No admin scope: an aal2 login for the admin API by a person without the role.
    plain = await totp_user(client, clock)
    no_scope = await mfa_login(client, clock, plain, resource=audience)
    assert claims_of(no_scope["access_token"])["scope"] == ""
    # Wrong audience: an operator's everyday aal2 token (the service's own audience).
    everyday_who = await totp_user(client, clock)
    await make_operator(db, everyday_who.user["id"])
    everyday = await mfa_login(client, clock, everyday_who)
    assert "admin" in claims_of(everyday["access_token"])["scope"].split()
    # aal1: an operator without a second factor, for the admin API.
    weak_user = await register(client)
    await make_operator(db, weak_user["id"])
    weak = await client.post(
        "/login",
        json={
            "email": weak_user["email"],
            "password": "correct horse battery",
            "resource": audience,
        },
    )
    assert weak.status_code == 200, weak.text
    assert claims_of(weak.json()["access_token"])["acr"] == "aal1"
    # Disabled (the flag alone, sessions left live), revoked session, role taken away.
    _, disabled = await operator(client, clock, db, settings)
    await db.execute(
        "UPDATE users SET disabled_at = now() WHERE id = $1",
        uuid.UUID(claims_of(disabled["access_token"])["sub"]),
    )
    _, revoked = await operator(client, clock, db, settings)
    await db.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = 'logout' WHERE id = $1",
        uuid.UUID(claims_of(revoked["access_token"])["sid"]),
        clock.now,
    )
    unroled_who, unroled = await operator(client, clock, db, settings)
    await db.execute("DELETE FROM user_roles WHERE user_id = $1", uuid.UUID(unroled_who.user["id"]))
    # Delegated: a good operator's own session, but with `act` (as token exchange writes it).
    good_who, good = await operator(client, clock, db, settings)
    good_claims = claims_of(good["access_token"])
    delegated, _ = TokenCodec(settings).mint_access(
        subject=good_claims["sub"],
        session_id=good_claims["sid"],
        email=good_claims["email"],
        scope="admin",
        now=clock.now,
        audience=audience,
        actor={"sub": "some-client"},
        strength=Strength(amr=("pwd", "otp", "mfa"), acr="aal2", auth_time=clock.now),
    )
    # A client's admin token minted for the admin API's audience (nothing mints one: forged
    # with the service's own key, it is still refused).
    admin_client_id, _ = await admin_client(client, db, settings)
    client_for_admin_api, _ = TokenCodec(settings).mint_access(
        subject=admin_client_id,
        client_id=admin_client_id,
        scope="admin",
        now=clock.now,
        audience=audience,
    )
    before = await everything(db)

    for method, path in admin_endpoints():
        for caller, status, code in (
            (no_scope, 403, "insufficient_scope"),
            (everyday, 403, "invalid_token"),
            (weak.json(), 401, "insufficient_user_authentication"),
            (stale, 401, "insufficient_user_authentication"),
            (disabled, 403, "invalid_token"),
            (revoked, 403, "invalid_token"),
            (unroled, 403, "invalid_token"),
            ({"access_token": delegated}, 403, "invalid_token"),
            ({"access_token": client_for_admin_api}, 403, "invalid_token"),
        ):
            refused = await client.request(method, path, headers=bearer(caller))
            assert_error(refused, status, code, secrets=(caller["access_token"],))
            challenge = refused.headers["www-authenticate"]
            assert f'error="{code}"' in challenge, (method, path, challenge)
            if status == 401:
                # RFC 9470 §3: what the client must come back with.
                assert 'acr_values="aal2"' in challenge
                assert f"max_age={settings.admin_max_auth_age}" in challenge
    assert await everything(db) == before
    allowed = await client.get("/admin/roles", headers=bearer(good))
    assert allowed.status_code == 200, allowed.text
    assert good_who.user["id"] == good_claims["sub"]


async def test_a_good_operator_administers_and_is_audited_as_themselves(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection, settings: Settings
) -> None:
    """A role made, given to a user, the user disabled (their sessions end) and a client
    created: each event's actor is `user:<operator's id>`, and the audit log filters by it. A
    refreshed admin token (within ADMIN_MAX_AUTH_AGE) still works."""
    who, pair = await operator(client, clock, db, settings)
    actor = f"user:{who.user['id']}"
    headers = bearer(pair)
    target = await register(client)
    target_pair = await login(client, target["email"])

    role = await client.put("/admin/roles/support", json={"scopes": ["read"]}, headers=headers)
    given = await client.put(
        f"/admin/users/{target['id']}/roles", json={"roles": ["support"]}, headers=headers
    )
    disabled = await client.post(f"/admin/users/{target['id']}/disable", headers=headers)
    created = await client.post(
        "/admin/clients", json={"name": "billing", "scopes": ["read"]}, headers=headers
    )
    clock.advance(settings.access_token_ttl - 1)
    refreshed = await client.post(
        "/refresh",
        json={"refresh_token": pair["refresh_token"], "resource": settings.admin_api_audience},
    )
    assert refreshed.status_code == 200, refreshed.text
    audit = await client.get(
        "/admin/audit", params={"actor": actor}, headers=bearer(refreshed.json())
    )

    assert role.status_code == 201, role.text
    assert given.status_code == 200, given.text
    assert disabled.status_code == 204, disabled.text
    assert created.status_code == 201, created.text
    assert audit.status_code == 200, audit.text
    events = audit.json()["events"]
    assert {event["action"] for event in events} >= {
        "role_put",
        "user_roles_set",
        "user_disabled",
        "client_created",
    }
    assert {event["actor"] for event in events} == {actor}
    rows = await db.fetch(
        "SELECT DISTINCT actor FROM audit_events WHERE action = ANY($1::text[])",
        ["role_put", "user_roles_set", "user_disabled", "client_created"],
    )
    assert [row["actor"] for row in rows] == [actor]
    ended = await client.get("/profile", headers=bearer(target_pair))
    assert_error(ended, 403, "invalid_token")


async def test_an_operators_login_ages_out_at_the_configured_age(
    clock: FakeClock, db: asyncpg.Connection, make_settings: Any
) -> None:
    """ADMIN_MAX_AUTH_AGE is read: at exactly that age a token works, one second later not."""
    settings = make_settings(admin_max_auth_age=600)
    async with serve(settings, clock) as own:
        _, pair = await operator(own, clock, db, settings)
        clock.advance(600)
        at_the_limit = await own.get("/admin/roles", headers=bearer(pair))
        clock.advance(1)
        past_it = await own.get("/admin/roles", headers=bearer(pair))

    assert at_the_limit.status_code == 200, at_the_limit.text
    assert_error(past_it, 401, "insufficient_user_authentication")
    assert "max_age=600" in past_it.headers["www-authenticate"]


async def test_an_operator_signs_in_with_a_passkey_for_the_admin_api(
    clock: FakeClock, db: asyncpg.Connection, make_settings: Any
) -> None:
    """/passkeys/login with resource=ADMIN_AUDIENCE: a passkey is a second factor on its own
    (aal2), so its token opens the admin API."""
    settings = make_settings(webauthn_origins=("http://localhost:8000",))
    async with serve(settings, clock) as own:
        user = await register(own)
        headers = bearer(await login(own, user["email"]))
        options = (await own.post("/passkeys/register/options", headers=headers)).json()
        authenticator = SoftAuthenticator()
        registered = await own.post(
            "/passkeys/register",
            headers=headers,
            json={"credential": authenticator.create(options)},
        )
        await make_operator(db, user["id"])
        login_options = (await own.post("/passkeys/login/options")).json()
        signed_in = await own.post(
            "/passkeys/login",
            json={
                "credential": authenticator.get(login_options),
                "resource": settings.admin_api_audience,
            },
        )
        listed = await own.get("/admin/users", headers=bearer(signed_in.json()))

    assert registered.status_code == 201, registered.text
    assert signed_in.status_code == 200, signed_in.text
    claims = claims_of(signed_in.json()["access_token"])
    assert (claims["aud"], claims["scope"], claims["acr"]) == (
        settings.admin_api_audience,
        "admin",
        "aal2",
    )
    assert listed.status_code == 200, listed.text
