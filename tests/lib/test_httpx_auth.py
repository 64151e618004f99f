"""tokenrota.httpx_auth: one token for many requests, renewal before expiry, one retry when the
API refuses the token (401, or 403 invalid_token)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.httpx_auth import ClientCredentialsAuth
from tokenrota.verify import Introspection, TokenVerifier, protect, requires_scope, token_claims
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings

from tests.oauth_support import Dispatcher, FakeMonotonic, basic, running_app
from tests.support import CreateClient, FakeClock

TOKEN_PATH = "/oauth/token"


def resource_app(verifier: TokenVerifier) -> Starlette:
    """An API under /api that needs scope read."""

    @requires_scope("read")
    async def data(request: Request) -> Response:
        return JSONResponse({"sub": token_claims(request).subject})

    async def echo(request: Request) -> Response:
        return JSONResponse({"body": (await request.body()).decode()})

    return Starlette(
        routes=[
            Route("/api/data", data),
            Route("/api/echo", requires_scope("read")(echo), methods=["POST"]),
        ],
        middleware=[protect(verifier)],
    )


def shared_secret_verifier(
    settings: Settings, clock: FakeClock, **options: object
) -> TokenVerifier:
    return TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def world(
    settings: Settings, clock: FakeClock
) -> AsyncIterator[tuple[Dispatcher, httpx.AsyncClient]]:
    """The token service and an API behind one in-process transport, requests counted."""
    async with running_app(settings, clock) as service:
        dispatcher = Dispatcher(service, api=resource_app(shared_secret_verifier(settings, clock)))
        transport = httpx.ASGITransport(app=dispatcher)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as plain:
            yield dispatcher, plain


def auth_for(credentials: tuple[str, str], **options: object) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        "https://testserver/oauth/token",
        *credentials,
        **options,  # type: ignore[arg-type]
    )


async def test_100_concurrent_requests_cause_one_token_request(
    world: tuple[Dispatcher, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """A cold client under a burst of 100 requests asks for exactly one token."""
    dispatcher, plain = world
    credentials = await create_client(db, settings, scope="read")
    http = httpx.AsyncClient(
        transport=plain._transport, base_url="https://testserver", auth=auth_for(credentials)
    )

    async with http:
        responses = await asyncio.gather(*(http.get("/api/data") for _ in range(100)))

    assert [response.status_code for response in responses] == [200] * 100
    assert {response.json()["sub"] for response in responses} == {credentials[0]}
    assert dispatcher.counts[TOKEN_PATH] == 1
    assert dispatcher.counts["/api/data"] == 100


async def test_token_is_reused_until_shortly_before_expiry(
    world: tuple[Dispatcher, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
) -> None:
    """Renewal happens `renew_before` seconds ahead of expiry, not before."""
    dispatcher, plain = world
    credentials = await create_client(db, settings, scope="read")
    ticks = FakeMonotonic()
    http = httpx.AsyncClient(
        transport=plain._transport,
        base_url="https://testserver",
        auth=auth_for(credentials, renew_before=30, clock=ticks),
    )

    async with http:
        await http.get("/api/data")
        ticks.advance(settings.access_token_ttl - 31)
        clock.advance(settings.access_token_ttl - 31)
        still_cached = (await http.get("/api/data")).status_code
        count_before_renewal = dispatcher.counts[TOKEN_PATH]
        ticks.advance(2)
        clock.advance(2)
        renewed = (await http.get("/api/data")).status_code

    assert still_cached == 200
    assert count_before_renewal == 1
    assert renewed == 200
    assert dispatcher.counts[TOKEN_PATH] == 2


async def test_a_refused_token_is_renewed_and_retried_once(
    settings: Settings, clock: FakeClock, db: asyncpg.Connection, create_client: CreateClient
) -> None:
    """A revoked token is refused by the API (403 invalid_token); the client renews, resends
    the body, succeeds."""
    credentials = await create_client(db, settings, scope="read")
    resource = await create_client(db, settings, scope="")
    async with running_app(settings, clock) as service:
        introspector = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service), base_url="https://testserver"
        )
        introspection = Introspection(
            "https://testserver/oauth/introspect",
            introspector,
            client_id=resource[0],
            client_secret=resource[1],
            cache_ttl=0,
        )
        api = resource_app(shared_secret_verifier(settings, clock, introspection=introspection))
        dispatcher = Dispatcher(service, api=api)
        auth = auth_for(credentials)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=dispatcher), base_url="https://testserver", auth=auth
        )
        async with http, introspector:
            first = await http.post("/api/echo", content=b"payload")
            bearer = {"Authorization": first.request.headers["authorization"]}
            await http.post(
                "/oauth/revoke",
                data={"token": bearer["Authorization"].split()[1]},
                headers=basic(*credentials),
                auth=None,  # the client's own credentials, not its bearer token
            )
            refused = await http.post("/api/echo", content=b"payload", auth=None, headers=bearer)
            retried = await http.post("/api/echo", content=b"payload")

    assert refused.status_code == 403
    assert refused.json()["error"] == "invalid_token"
    assert first.status_code == 200
    assert retried.status_code == 200
    assert retried.json() == {"body": "payload"}
    assert dispatcher.counts[TOKEN_PATH] == 2
    assert dispatcher.counts["/api/echo"] == 4


async def test_retry_happens_only_once(
    settings: Settings, clock: FakeClock, db: asyncpg.Connection, create_client: CreateClient
) -> None:
    """An API that refuses every token (another audience) is tried twice; its 403 returns."""
    credentials = await create_client(db, settings, scope="read")
    elsewhere = TokenVerifier(
        issuer=settings.token_issuer,
        audience="https://another.example",
        secret=str(settings.access_token_secret),
        clock=clock,
    )
    async with running_app(settings, clock) as service:
        dispatcher = Dispatcher(service, api=resource_app(elsewhere))
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=dispatcher),
            base_url="https://testserver",
            auth=auth_for(credentials),
        )
        async with http:
            response = await http.get("/api/data")

    assert response.status_code == 403
    assert response.json()["error"] == "invalid_token"
    assert dispatcher.counts["/api/data"] == 2
    assert dispatcher.counts[TOKEN_PATH] == 2


async def test_insufficient_scope_is_not_retried(
    world: tuple[Dispatcher, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """A 403 is an answer, not a stale token: no renewal, no retry."""
    dispatcher, plain = world
    credentials = await create_client(db, settings, scope="write")
    http = httpx.AsyncClient(
        transport=plain._transport, base_url="https://testserver", auth=auth_for(credentials)
    )

    async with http:
        response = await http.get("/api/data")

    assert response.status_code == 403
    assert dispatcher.counts[TOKEN_PATH] == 1
    assert dispatcher.counts["/api/data"] == 1


async def test_a_wrong_secret_raises(
    world: tuple[Dispatcher, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """The token endpoint's 401 surfaces as httpx.HTTPStatusError; the API is never called."""
    dispatcher, plain = world
    client_id, _ = await create_client(db, settings, scope="read")
    http = httpx.AsyncClient(
        transport=plain._transport,
        base_url="https://testserver",
        auth=auth_for((client_id, "wrong")),
    )

    async with http:
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await http.get("/api/data")

    assert caught.value.response.status_code == 401
    assert dispatcher.counts["/api/data"] == 0


@pytest.fixture
def live_server(settings: Settings, clock: FakeClock) -> Iterator[tuple[str, Dispatcher]]:
    """The service and the API served by uvicorn on a real socket, in a thread of its own."""
    dispatcher = Dispatcher(
        create_app(settings, clock=clock),
        api=resource_app(shared_secret_verifier(settings, clock)),
    )
    server = uvicorn.Server(
        uvicorn.Config(dispatcher, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", dispatcher
    server.should_exit = True
    thread.join(timeout=30)


async def test_sync_client_from_many_threads_asks_for_one_token(
    live_server: tuple[str, Dispatcher],
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """httpx.Client shared by 20 threads, 100 requests: one token request at the server."""
    base_url, dispatcher = live_server
    credentials = await create_client(db, settings, scope="read")
    auth = ClientCredentialsAuth(f"{base_url}/oauth/token", *credentials)

    def burst() -> list[int]:
        with httpx.Client(base_url=base_url, auth=auth) as http, ThreadPoolExecutor(20) as pool:
            return list(pool.map(lambda _: http.get("/api/data").status_code, range(100)))

    statuses = await asyncio.to_thread(burst)

    assert statuses == [200] * 100
    assert dispatcher.counts[TOKEN_PATH] == 1
