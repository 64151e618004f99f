"""Roles become scopes: a user's access token carries the union of their roles' scopes and
the role names, read at login and refresh; resource servers guard routes on them."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.claims import access_claims_of
from tokenrota.errors import InvalidToken
from tokenrota.verify import Introspection, TokenVerifier, protect, requires_scope, token_claims
from tokenrota_server.config import Settings

from tests.admin_support import admin_client, bearer
from tests.oauth_support import Dispatcher, claims_of, create_client, running_app
from tests.support import FakeClock, login, register, register_and_login


async def refresh(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.post("/refresh", json={"refresh_token": token})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def put_role(
    client: httpx.AsyncClient, admin: dict[str, str], name: str, *scopes: str
) -> None:
    response = await client.put(
        f"/admin/roles/{name}", json={"scopes": list(scopes)}, headers=admin
    )
    assert response.status_code in (200, 201), response.text


async def set_roles(
    client: httpx.AsyncClient, admin: dict[str, str], user_id: str, *names: str
) -> None:
    response = await client.put(
        f"/admin/users/{user_id}/roles", json={"roles": list(names)}, headers=admin
    )
    assert response.status_code == 200, response.text


async def test_a_user_without_roles_gets_an_empty_scope_and_no_roles(
    client: httpx.AsyncClient,
) -> None:
    _, pair = await register_and_login(client)

    claims = claims_of(pair["access_token"])

    assert claims["scope"] == ""
    assert claims["roles"] == []


async def test_a_role_change_shows_in_the_next_refreshed_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The scopes are the sorted union of the roles' scopes; the roles are sorted too."""
    _, admin = await admin_client(client, db, settings)
    await put_role(client, admin, "support", "tickets:read", "read")
    await put_role(client, admin, "billing", "invoices:write", "read")
    user, pair = await register_and_login(client)
    before = claims_of(pair["access_token"])

    await set_roles(client, admin, user["id"], "support", "billing")
    refreshed = await refresh(client, pair["refresh_token"])
    relogged = await login(client, user["email"])

    assert before["scope"] == ""
    for token in (refreshed["access_token"], relogged["access_token"]):
        claims = claims_of(token)
        assert claims["scope"] == "invoices:write read tickets:read"
        assert claims["roles"] == ["billing", "support"]


async def test_a_changed_roles_scopes_show_at_the_next_refresh(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """Editing a role (not the grant) reaches every holder's next token too."""
    _, admin = await admin_client(client, db, settings)
    await put_role(client, admin, "support", "read")
    user, pair = await register_and_login(client)
    await set_roles(client, admin, user["id"], "support")

    await put_role(client, admin, "support", "read", "write")
    refreshed = await refresh(client, pair["refresh_token"])

    assert claims_of(refreshed["access_token"])["scope"] == "read write"


async def test_the_cookie_refresh_carries_the_roles_too(
    settings: Settings, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """The browser's refresh (cookie mode) goes through the same statement as the JSON one."""
    origin = "https://app.example"
    browser_settings = settings.__class__(
        **{**settings.__dict__, "allowed_origins": (origin,)}  # type: ignore[arg-type]
    )
    async with running_app(browser_settings, clock) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            _, admin = await admin_client(http, db, browser_settings)
            await put_role(http, admin, "viewer", "read")
            user = await register(http)
            await set_roles(http, admin, user["id"], "viewer")
            logged_in = await http.post(
                "/login",
                json={
                    "email": user["email"],
                    "password": "correct horse battery",
                    "use_cookie": True,
                },
            )
            refreshed = await http.post(
                "/refresh",
                headers={
                    "Origin": origin,
                    "X-Requested-With": "fetch",
                    "Sec-Fetch-Site": "same-site",
                },
            )

    assert logged_in.status_code == 200, logged_in.text
    assert refreshed.status_code == 200, refreshed.text
    assert claims_of(refreshed.json()["access_token"])["roles"] == ["viewer"]
    assert claims_of(refreshed.json()["access_token"])["scope"] == "read"


def guarded_api(verifier: TokenVerifier) -> Starlette:
    """A resource server: /api/tickets needs the scope tickets:read; it echoes the roles."""

    @requires_scope("tickets:read")
    async def tickets(request: Request) -> Response:
        claims = token_claims(request)
        return JSONResponse({"roles": list(claims.roles), "scope": claims.scope})

    return Starlette(routes=[Route("/api/tickets", tickets)], middleware=[protect(verifier)])


async def test_a_removed_role_stops_a_guarded_route_at_the_next_refresh_or_at_once_on_revocation(
    settings: Settings, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Local verification keeps honouring a token until the next refresh; revoking the
    user's sessions (with introspection in the resource server) stops it at once."""
    resource_id, resource_secret = await create_client(db, settings, scope="", name="api")
    async with running_app(settings, clock) as service:
        introspector = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service), base_url="https://testserver"
        )
        verifier = TokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            secret=str(settings.access_token_secret),
            clock=clock,
            introspection=Introspection(
                "https://testserver/oauth/introspect",
                introspector,
                client_id=resource_id,
                client_secret=resource_secret,
                cache_ttl=0,
            ),
        )
        dispatcher = Dispatcher(service, api=guarded_api(verifier))
        transport = httpx.ASGITransport(app=dispatcher)
        async with (
            introspector,
            httpx.AsyncClient(transport=transport, base_url="https://testserver") as http,
        ):
            _, admin = await admin_client(http, db, settings)
            await put_role(http, admin, "support", "tickets:read")
            user = await register(http)
            await set_roles(http, admin, user["id"], "support")
            pair = await login(http, user["email"])
            allowed = await http.get("/api/tickets", headers=bearer(pair))

            await set_roles(http, admin, user["id"])
            until_refresh = await http.get("/api/tickets", headers=bearer(pair))
            pair = await refresh(http, pair["refresh_token"])
            after_refresh = await http.get("/api/tickets", headers=bearer(pair))

            await set_roles(http, admin, user["id"], "support")
            pair = await refresh(http, pair["refresh_token"])
            regranted = await http.get("/api/tickets", headers=bearer(pair))
            revoked = await http.delete(f"/admin/users/{user['id']}/sessions", headers=admin)
            after_revocation = await http.get("/api/tickets", headers=bearer(pair))

    assert allowed.status_code == 200
    assert allowed.json() == {"roles": ["support"], "scope": "tickets:read"}
    assert until_refresh.status_code == 200
    assert after_refresh.status_code == 403
    assert after_refresh.json()["error"] == "insufficient_scope"
    assert regranted.status_code == 200
    assert revoked.status_code == 204
    assert after_revocation.status_code == 403
    assert after_revocation.json()["error"] == "invalid_token"


def registered(**extra: Any) -> dict[str, Any]:
    return {"sub": "u", "jti": "j", "iat": 1, "exp": 2, "scope": "", **extra}


@pytest.mark.parametrize(
    "claims",
    [
        registered(sid="s", email="e", roles="admin"),
        registered(sid="s", email="e", roles=[1]),
        registered(sid="s", email="e", roles=None),
        registered(client_id="c", roles=["admin"]),
    ],
    ids=["roles a string", "roles not names", "roles null", "a client with roles"],
)
def test_the_library_refuses_ill_formed_roles(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        access_claims_of(claims)


def test_the_library_reads_roles_and_tolerates_tokens_minted_before_roles() -> None:
    with_roles = access_claims_of(registered(sid="s", email="e", roles=["a", "b"], scope="x y"))
    older = access_claims_of(registered(sid="s", email="e"))

    assert with_roles.roles == ("a", "b")
    assert with_roles.scope == "x y"
    assert older.roles == ()
