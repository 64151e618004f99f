"""tokenrota.httpx_auth and audiences: a caller of two APIs holds one token per resource, each
sent only to its own API; a resource server exchanges its caller's token for the next API's."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.httpx_auth import ClientCredentialsAuth, TokenExchange
from tokenrota.verify import TokenVerifier, presented_token, protect, token_claims
from tokenrota_server.config import Settings
from tokenrota_server.db.resources import GrantKind

from tests.admin_support import admin_client
from tests.audience_support import create_resource, grant
from tests.oauth_support import claims_of, create_client
from tests.support import PASSWORD, FakeClock, register, running_app

ORDERS_ORIGIN, ORDERS = "https://orders.example", "https://orders.example/api"
BILLING_ORIGIN, BILLING = "https://billing.example", "https://billing.example"
TOKEN_URL = "https://auth.example/oauth/token"


class Hosts:
    """One ASGI app per host, counting what each host is asked, and each token request's form."""

    def __init__(self, **apps: Any) -> None:
        self._apps = apps
        self.counts: collections.Counter[str] = collections.Counter()
        self.token_forms: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        host = dict(scope["headers"]).get(b"host", b"").decode()
        if scope["type"] == "http":
            self.counts[f"{host}{scope['path']}"] += 1
        await self._apps[host.partition(".")[0]](scope, receive, send)


def api(audience: str, exchange: TokenExchange | None = None) -> Starlette:
    """An API that says which token it got; /next calls billing on its caller's behalf."""

    async def whoami(request: Request) -> Response:
        claims = token_claims(request)
        return JSONResponse({"aud": claims.audience, "sub": claims.subject, "act": claims.actor})

    async def onward(request: Request) -> Response:
        assert exchange is not None
        async with httpx.AsyncClient(transport=request.app.state.transport) as http:
            answer = await http.get(
                f"{BILLING_ORIGIN}/whoami", auth=exchange.on_behalf_of(presented_token(request))
            )
        return JSONResponse(answer.json(), status_code=answer.status_code)

    return Starlette(
        routes=[Route("/whoami", whoami), Route("/next", onward)],
        middleware=[protect(verifier_for(audience))],
    )


SETTINGS: dict[str, Settings] = {}


def verifier_for(audience: str) -> TokenVerifier:
    settings = SETTINGS["current"]
    return TokenVerifier(
        issuer=settings.token_issuer, audience=audience, secret=str(settings.access_token_secret)
    )


@pytest.fixture
async def world(
    settings: Settings, clock: FakeClock, db: asyncpg.Connection
) -> AsyncIterator[tuple[Hosts, httpx.ASGITransport, httpx.AsyncClient]]:
    """The service (auth.example), orders and billing, on one in-process transport; orders and
    billing registered as resources."""
    SETTINGS["current"] = settings
    async with running_app(settings, clock) as service:
        hosts = Hosts(auth=service, orders=api(ORDERS), billing=api(BILLING))
        transport = httpx.ASGITransport(app=hosts)
        async with httpx.AsyncClient(transport=transport, base_url="https://auth.example") as plain:
            _, admin = await admin_client(plain, db, settings)
            await create_resource(plain, admin, ORDERS, "orders:read")
            await create_resource(plain, admin, BILLING, "billing:read")
            hosts.counts.clear()  # the admin's own token request is not the test's
            yield hosts, transport, plain


async def test_one_token_per_resource_each_sent_only_to_its_api(
    world: tuple[Hosts, httpx.ASGITransport, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
) -> None:
    """A burst to two APIs asks for two tokens, one per resource, and each API receives only
    a token whose audience is its own."""
    hosts, transport, _ = world
    client_id, secret = await create_client(db, settings, scope="")
    await grant(db, client_id, ORDERS, GrantKind.TOKEN, "orders:read")
    await grant(db, client_id, BILLING, GrantKind.TOKEN, "billing:read")
    auth = ClientCredentialsAuth(
        TOKEN_URL,
        client_id,
        secret,
        resources={ORDERS_ORIGIN: ORDERS, BILLING_ORIGIN + "/": BILLING},
    )

    async with httpx.AsyncClient(transport=transport, auth=auth) as http:
        answers = await asyncio.gather(
            *(http.get(f"{origin}/whoami") for origin in [ORDERS_ORIGIN, BILLING_ORIGIN] * 25)
        )

    assert [a.status_code for a in answers] == [200] * 50
    assert {a.json()["aud"] for a in answers[0::2]} == {ORDERS}
    assert {a.json()["aud"] for a in answers[1::2]} == {BILLING}
    assert hosts.counts["auth.example/oauth/token"] == 2


async def test_a_request_to_an_origin_without_a_resource_sends_nothing(
    world: tuple[Hosts, httpx.ASGITransport, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
) -> None:
    """Fail closed: no token is asked for or sent where none was configured."""
    hosts, transport, _ = world
    client_id, secret = await create_client(db, settings, scope="")
    auth = ClientCredentialsAuth(TOKEN_URL, client_id, secret, resources={ORDERS_ORIGIN: ORDERS})

    async with httpx.AsyncClient(transport=transport, auth=auth) as http:
        with pytest.raises(ValueError, match="no resource"):
            await http.get(f"{BILLING_ORIGIN}/whoami")
        with pytest.raises(ValueError, match="no resource"):
            await http.get("http://orders.example/whoami")  # another scheme, another origin

    assert sum(hosts.counts.values()) == 0


async def test_one_resource_or_none(
    world: tuple[Hosts, httpx.ASGITransport, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
) -> None:
    """resource= asks for that audience; without it the token is the service's own, which an
    API refuses (after one renewal: the 403 invalid_token comes back as it is)."""
    hosts, transport, _ = world
    client_id, secret = await create_client(db, settings, scope="")
    await grant(db, client_id, ORDERS, GrantKind.TOKEN, "orders:read")
    pinned = ClientCredentialsAuth(TOKEN_URL, client_id, secret, resource=ORDERS)
    unpinned = ClientCredentialsAuth(TOKEN_URL, client_id, secret)

    async with httpx.AsyncClient(transport=transport) as http:
        ours = await http.get(f"{ORDERS_ORIGIN}/whoami", auth=pinned)
        theirs = await http.get(f"{ORDERS_ORIGIN}/whoami", auth=unpinned)

    assert (ours.status_code, ours.json()["aud"]) == (200, ORDERS)
    assert (theirs.status_code, theirs.json()["error"]) == (403, "invalid_token")
    assert hosts.counts["auth.example/oauth/token"] == 3


async def test_a_resource_server_exchanges_its_callers_token_once_per_user(
    world: tuple[Hosts, httpx.ASGITransport, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
) -> None:
    """orders, called with a user's token for orders, calls billing with an exchanged token:
    same subject, aud billing, act naming orders' client. Concurrent calls for one user
    exchange once; another user gets a token of their own."""
    hosts, transport, plain = world
    orders_id, orders_secret = await create_client(db, settings, scope="", name="orders")
    await grant(db, orders_id, ORDERS, GrantKind.SERVES)
    await grant(db, orders_id, BILLING, GrantKind.EXCHANGE, "billing:read")
    exchange = TokenExchange(TOKEN_URL, orders_id, orders_secret, resource=BILLING)
    orders = api(ORDERS, exchange)
    orders.state.transport = transport
    hosts._apps["orders"] = orders
    tokens = []
    for _ in range(2):
        user = await register(plain)
        login = {"email": user["email"], "password": PASSWORD, "resource": ORDERS}
        tokens.append((user["id"], (await plain.post("/login", json=login)).json()["access_token"]))

    async with httpx.AsyncClient(transport=transport) as http:
        calls = [
            http.get(f"{ORDERS_ORIGIN}/next", headers={"Authorization": f"Bearer {token}"})
            for _, token in tokens * 10
        ]
        answers = await asyncio.gather(*calls)

    assert [a.status_code for a in answers] == [200] * 20
    for (user_id, _), answer in zip(tokens * 10, answers, strict=True):
        assert answer.json() == {"aud": BILLING, "sub": user_id, "act": {"sub": orders_id}}
    assert hosts.counts["auth.example/oauth/token"] == 2
    assert claims_of(tokens[0][1])["aud"] == ORDERS


def test_the_resources_are_checked_when_the_auth_is_made() -> None:
    """Resource URIs by tokenrota.resource's grammar; origins http(s); one way to name them."""
    for bad in ({ORDERS_ORIGIN: "orders"}, {"orders.example": ORDERS}, {"ftp://o.example": ORDERS}):
        with pytest.raises(ValueError, match=r"resource URI|origin"):
            ClientCredentialsAuth(TOKEN_URL, "c", "s", resources=bad)
    for resource in ("orders", ORDERS + "#x", ""):
        with pytest.raises(ValueError, match="resource URI"):
            ClientCredentialsAuth(TOKEN_URL, "c", "s", resource=resource)
        with pytest.raises(ValueError, match="resource URI"):
            TokenExchange(TOKEN_URL, "c", "s", resource=resource)
    with pytest.raises(ValueError, match="not both"):
        ClientCredentialsAuth(TOKEN_URL, "c", "s", resource=ORDERS, resources={})
