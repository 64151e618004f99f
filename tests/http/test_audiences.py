"""Audiences (RFC 8707): `resource` at /login, /refresh and /oauth/token mints a token for that
API alone; the service's own routes refuse every other audience; bad `resource` values are
400 invalid_target with nothing written."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota.errors import InvalidToken
from tokenrota.verify import TokenVerifier
from tokenrota_server.config import Settings
from tokenrota_server.db.resources import GrantKind

from tests.admin_support import admin_client, bearer
from tests.audience_support import create_resource, grant
from tests.mfa_support import start_login, totp_user
from tests.oauth_support import basic, claims_of, client_token, create_client
from tests.support import PASSWORD, FakeClock, Serve, TableSnapshot, register

ORDERS = "https://orders.example/api"
BILLING = "https://billing.example/"
APP = "https://app.example"
GOOD = {"Origin": APP, "X-Requested-With": "fetch", "Sec-Fetch-Site": "same-site"}


async def user_with_scopes(
    client: httpx.AsyncClient, admin: dict[str, str], *scopes: str
) -> dict[str, Any]:
    """A registered user holding a role with `scopes`."""
    user = await register(client)
    response = await client.put("/admin/roles/staff", json={"scopes": list(scopes)}, headers=admin)
    assert response.status_code in (200, 201), response.text
    response = await client.put(
        f"/admin/users/{user['id']}/roles", json={"roles": ["staff"]}, headers=admin
    )
    assert response.status_code == 200, response.text
    return user


async def login(client: httpx.AsyncClient, user: dict[str, Any], **extra: Any) -> httpx.Response:
    return await client.post("/login", json={"email": user["email"], "password": PASSWORD, **extra})


@pytest.fixture
async def admin(client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings) -> Any:
    """The bearer header of an admin client, with the orders and billing resources registered."""
    _, header = await admin_client(client, db, settings)
    await create_resource(client, header, ORDERS, "orders:read", "orders:write")
    await create_resource(client, header, BILLING, "billing:read", access_token_ttl=120)
    return header


async def test_login_for_a_resource_mints_its_audience_with_the_scopes_it_defines(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """aud = the URI; scope = the user's scopes the resource defines, and no others."""
    user = await user_with_scopes(client, admin, "orders:read", "billing:read", "tickets:read")

    response = await login(client, user, resource=ORDERS)

    claims = claims_of(response.json()["access_token"])
    assert response.status_code == 200
    assert claims["aud"] == ORDERS
    assert claims["scope"] == "orders:read"
    assert claims["exp"] - claims["iat"] == 900


async def test_without_a_resource_the_token_is_the_services_own_as_before(
    client: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    """No `resource`, or the service's own audience named: aud is the service, every scope."""
    user = await user_with_scopes(client, admin, "orders:read", "tickets:read")

    plain = claims_of((await login(client, user)).json()["access_token"])
    named = claims_of(
        (await login(client, user, resource=settings.token_audience)).json()["access_token"]
    )

    assert plain["aud"] == named["aud"] == settings.token_audience
    assert plain["scope"] == named["scope"] == "orders:read tickets:read"


async def test_a_resource_with_a_shorter_lifetime_gets_it(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """access_token_ttl of the resource: the token's lifetime and expires_in."""
    user = await user_with_scopes(client, admin, "billing:read")

    body = (await login(client, user, resource=BILLING)).json()

    claims = claims_of(body["access_token"])
    assert claims["exp"] - claims["iat"] == 120
    assert body["expires_in"] == 120


async def test_each_refresh_may_ask_for_any_resource_with_one_refresh_token(
    client: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    """RFC 8707 §2.2: one session, one rotating refresh token, a token per audience asked."""
    user = await user_with_scopes(client, admin, "orders:read", "billing:read")
    pair = (await login(client, user)).json()
    audiences = []

    for resource in (ORDERS, BILLING, None):
        extra = {"resource": resource} if resource else {}
        response = await client.post(
            "/refresh", json={"refresh_token": pair["refresh_token"], **extra}
        )
        assert response.status_code == 200, response.text
        pair = response.json()
        audiences.append(claims_of(pair["access_token"])["aud"])

    assert audiences == [ORDERS, BILLING, settings.token_audience]


async def test_rotation_grace_and_reuse_are_unchanged_by_a_resource(
    client: httpx.AsyncClient, admin: dict[str, str], clock: FakeClock
) -> None:
    """Within the grace window the same child again, for the resource asked; after it, reuse
    revokes the session."""
    user = await user_with_scopes(client, admin, "orders:read")
    first = (await login(client, user)).json()["refresh_token"]

    rotated = await client.post("/refresh", json={"refresh_token": first, "resource": ORDERS})
    again = await client.post("/refresh", json={"refresh_token": first, "resource": BILLING})
    clock.advance(60)
    replayed = await client.post("/refresh", json={"refresh_token": first, "resource": ORDERS})
    child = await client.post("/refresh", json={"refresh_token": rotated.json()["refresh_token"]})

    assert rotated.json()["refresh_token"] == again.json()["refresh_token"]
    assert claims_of(again.json()["access_token"])["aud"] == BILLING
    assert (replayed.status_code, child.status_code) == (403, 403)


async def test_the_cookie_transport_takes_a_resource_too(
    make_settings: Any, clock: FakeClock, serve: Serve, db: asyncpg.Connection
) -> None:
    """/refresh with the refresh cookie and a JSON body naming the resource."""
    settings = make_settings(allowed_origins=(APP,))
    async with serve(settings, clock) as browser:
        _, header = await admin_client(browser, db, settings)
        await create_resource(browser, header, ORDERS, "orders:read")
        user = await register(browser)
        logged_in = await login(browser, user, use_cookie=True, resource=ORDERS)
        cookie = logged_in.cookies["__Host-refresh_token"]
        browser.cookies.clear()

        refreshed = await browser.post(
            "/refresh",
            json={"resource": ORDERS},
            headers={**GOOD, "Cookie": f"__Host-refresh_token={cookie}"},
        )

    assert claims_of(logged_in.json()["access_token"])["aud"] == ORDERS
    assert refreshed.status_code == 200, refreshed.text
    assert claims_of(refreshed.json()["access_token"])["aud"] == ORDERS
    assert "refresh_token" not in refreshed.json()


BAD_RESOURCES = {
    "relative": "/api",
    "no scheme": "orders.example/api",
    "a fragment": ORDERS + "#x",
    "unknown": "https://unknown.example/",
    "a near miss": ORDERS + "/",
    "two of them": [ORDERS, BILLING],
    "one in a list": [ORDERS],
    "a number": 1,
    "blank": " ",
}


@pytest.mark.parametrize("resource", BAD_RESOURCES.values(), ids=BAD_RESOURCES.keys())
async def test_a_bad_resource_at_login_is_invalid_target_and_starts_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    db: asyncpg.Connection,
    table_snapshot: TableSnapshot,
    resource: object,
) -> None:
    """400 invalid_target before the password is checked: no session, no token."""
    user = await user_with_scopes(client, admin, "orders:read")
    before = await table_snapshot(db)

    response = await login(client, user, resource=resource)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("resource", BAD_RESOURCES.values(), ids=BAD_RESOURCES.keys())
async def test_a_bad_resource_at_refresh_is_invalid_target_and_spends_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    db: asyncpg.Connection,
    table_snapshot: TableSnapshot,
    resource: object,
) -> None:
    """400 invalid_target; the refresh token is not spent and still works."""
    user = await user_with_scopes(client, admin, "orders:read")
    token = (await login(client, user)).json()["refresh_token"]
    before = await table_snapshot(db)

    response = await client.post("/refresh", json={"refresh_token": token, "resource": resource})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    assert await table_snapshot(db) == before
    assert (await client.post("/refresh", json={"refresh_token": token})).status_code == 200


@pytest.mark.parametrize(
    "resource",
    [value for value in BAD_RESOURCES.values() if isinstance(value, str)],
)
async def test_a_bad_resource_at_the_oauth_refresh_grant_is_invalid_target(
    client: httpx.AsyncClient, admin: dict[str, str], resource: str
) -> None:
    """The same at /oauth/token with grant_type=refresh_token."""
    user = await user_with_scopes(client, admin, "orders:read")
    token = (await login(client, user)).json()["refresh_token"]

    response = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "resource": resource},
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


@pytest.mark.parametrize("second", [ORDERS, BILLING], ids=["the same twice", "conflicting"])
async def test_a_repeated_resource_at_oauth_token_is_invalid_target(
    client: httpx.AsyncClient, admin: dict[str, str], second: str
) -> None:
    """Two `resource` parameters, equal or not: one audience per token."""
    user = await user_with_scopes(client, admin, "orders:read")
    token = (await login(client, user)).json()["refresh_token"]

    response = await client.post(
        "/oauth/token",
        content=f"grant_type=refresh_token&refresh_token={token}&resource={ORDERS}"
        f"&resource={second}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


async def test_the_oauth_refresh_grant_mints_for_the_resource(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """grant_type=refresh_token with `resource`: its audience and scopes."""
    user = await user_with_scopes(client, admin, "orders:read", "tickets:read")
    token = (await login(client, user)).json()["refresh_token"]

    response = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "resource": ORDERS},
    )

    claims = claims_of(response.json()["access_token"])
    assert (claims["aud"], claims["scope"]) == (ORDERS, "orders:read")


FIRST_PARTY = [
    ("GET", "/profile", None),
    ("GET", "/sessions", None),
    ("POST", "/logout/all", None),
    ("POST", "/password", {"current_password": PASSWORD, "new_password": "another-password"}),
]


@pytest.mark.parametrize(("method", "path", "body"), FIRST_PARTY)
async def test_the_services_own_routes_refuse_a_token_for_a_resource(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    db: asyncpg.Connection,
    table_snapshot: TableSnapshot,
    method: str,
    path: str,
    body: Any,
) -> None:
    """403 invalid_token for a live user's token whose aud is an API's, and nothing changes."""
    user = await user_with_scopes(client, admin, "orders:read")
    pair = (await login(client, user, resource=ORDERS)).json()
    before = await table_snapshot(db)

    response = await client.request(method, path, json=body, headers=bearer(pair))

    assert response.status_code == 403
    assert response.json()["error"] == "invalid_token"
    assert await table_snapshot(db) == before


async def test_the_admin_api_refuses_an_admin_clients_token_for_a_resource(
    client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection, settings: Settings
) -> None:
    """A client holding `admin`, granted a resource: its token for that resource opens no admin
    route."""
    client_id, secret = await create_client(db, settings, scope="admin")
    await db.execute("UPDATE resources SET scopes = '{admin}' WHERE uri = $1", ORDERS)
    await grant(db, client_id, ORDERS, GrantKind.TOKEN, "admin")
    token = (await client_token(client, client_id, secret, resource=ORDERS)).json()

    response = await client.get("/admin/resources", headers=bearer(token))

    assert claims_of(token["access_token"])["scope"] == "admin"
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_token"


async def test_client_credentials_for_a_granted_resource(
    client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection, settings: Settings
) -> None:
    """aud = the resource; scope = the granted scopes (all by default, or a subset asked for);
    the resource's lifetime."""
    client_id, secret = await create_client(db, settings, scope="read")
    await grant(db, client_id, BILLING, GrantKind.TOKEN, "billing:read")

    default = await client_token(client, client_id, secret, resource=BILLING)
    named = await client_token(client, client_id, secret, resource=settings.token_audience)
    asked = await client_token(client, client_id, secret, resource=BILLING, scope="billing:read")
    plain = await client_token(client, client_id, secret)

    claims = claims_of(default.json()["access_token"])
    assert (claims["aud"], claims["scope"], claims["exp"] - claims["iat"]) == (
        BILLING,
        "billing:read",
        120,
    )
    assert asked.json()["scope"] == "billing:read"
    assert claims_of(plain.json()["access_token"])["aud"] == settings.token_audience
    assert plain.json()["scope"] == named.json()["scope"] == "read"
    assert claims_of(named.json()["access_token"])["aud"] == settings.token_audience


async def test_client_credentials_refuse_an_ungranted_resource_and_wider_scopes(
    client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection, settings: Settings
) -> None:
    """A resource granted to another kind of use or not at all: invalid_target; a scope the
    grant lacks (even one the client holds for the service): invalid_scope."""
    client_id, secret = await create_client(db, settings, scope="read orders:write")
    await grant(db, client_id, ORDERS, GrantKind.TOKEN, "orders:read")
    await grant(db, client_id, BILLING, GrantKind.EXCHANGE, "billing:read")

    ungranted = await client_token(client, client_id, secret, resource=BILLING)
    wider = await client_token(client, client_id, secret, resource=ORDERS, scope="orders:write")
    fragment = await client_token(client, client_id, secret, resource=ORDERS + "#x")

    assert ungranted.json()["error"] == "invalid_target"
    assert wider.json()["error"] == "invalid_scope"
    assert fragment.json()["error"] == "invalid_target"
    assert {ungranted.status_code, wider.status_code, fragment.status_code} == {400}


async def test_a_deleted_resource_is_unknown_from_then_on(
    client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection
) -> None:
    """Deleting a resource: new requests for it are invalid_target."""
    user = await user_with_scopes(client, admin, "orders:read")
    resource_id = await db.fetchval("SELECT id FROM resources WHERE uri = $1", ORDERS)
    await client.delete(f"/admin/resources/{resource_id}", headers=admin)

    response = await login(client, user, resource=ORDERS)

    assert response.json()["error"] == "invalid_target"


async def test_introspection_shows_a_resource_tokens_audience(
    client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection, settings: Settings
) -> None:
    """An introspecting client sees `aud` = the resource for an active resource token."""
    user = await user_with_scopes(client, admin, "orders:read")
    token = (await login(client, user, resource=ORDERS)).json()["access_token"]
    client_id, secret = await create_client(db, settings)

    response = await client.post(
        "/oauth/introspect", data={"token": token}, headers=basic(client_id, secret)
    )

    assert response.json()["active"] is True
    assert response.json()["aud"] == ORDERS
    assert response.json()["scope"] == "orders:read"


async def test_a_token_for_one_api_is_refused_by_a_verifier_pinned_to_another(
    client: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    """A verifier for BILLING refuses the user's ORDERS token, and one for ORDERS accepts it."""
    user = await user_with_scopes(client, admin, "orders:read")
    token = (await login(client, user, resource=ORDERS)).json()["access_token"]

    def verifier(audience: str) -> TokenVerifier:
        return TokenVerifier(
            issuer=settings.token_issuer,
            audience=audience,
            secret=str(settings.access_token_secret),
        )

    accepted = await verifier(ORDERS).verify(token)
    with pytest.raises(InvalidToken):
        await verifier(BILLING).verify(token)
    assert accepted.subject == user["id"]


async def test_the_second_step_of_a_login_takes_a_resource_too(
    client: httpx.AsyncClient, admin: dict[str, str], clock: FakeClock
) -> None:
    """/login/mfa mints for `resource` as /login does; a bad one is refused before the code is
    looked at, so neither the mfa_token nor the code is spent."""
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)
    code = who.code(clock)

    refused = await client.post(
        "/login/mfa",
        json={"mfa_token": started["mfa_token"], "code": code, "resource": "/relative"},
    )
    completed = await client.post(
        "/login/mfa", json={"mfa_token": started["mfa_token"], "code": code, "resource": ORDERS}
    )

    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_target")
    assert completed.status_code == 200, completed.text
    claims = claims_of(completed.json()["access_token"])
    assert (claims["aud"], claims["acr"]) == (ORDERS, "aal2")
