"""tokenrota.httpx_auth.DPoPClientCredentialsAuth against the real service and a real verifier:
tokens bound to the auth's own key, a fresh proof (with ath) on every request, one retry with
the nonce a server asks for."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from tokenrota.dpop import NONCE_STEP, Nonces
from tokenrota.httpx_auth import DPoPClientCredentialsAuth
from tokenrota.verify import TokenVerifier
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings

from tests.dpop_support import proof_claims
from tests.lib.test_httpx_auth import resource_app, shared_secret_verifier
from tests.oauth_support import Dispatcher, claims_of, running_app
from tests.support import CreateClient, FakeClock

TOKEN_PATH = "/oauth/token"
API_NONCES = Nonces(b"the resource server's own nonce secret, 32+ bytes")


@pytest.fixture
async def world(
    settings: Settings, clock: FakeClock
) -> AsyncIterator[tuple[Dispatcher, httpx.AsyncClient]]:
    """The service and a DPoP-aware API behind one in-process transport, requests counted."""
    async with in_process(settings, clock, shared_secret_verifier(settings, clock)) as world:
        yield world


def in_process(settings: Settings, clock: FakeClock, verifier: TokenVerifier) -> Any:
    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[tuple[Dispatcher, httpx.AsyncClient]]:
        async with running_app(settings, clock) as service:
            dispatcher = Dispatcher(service, api=resource_app(verifier))
            transport = httpx.ASGITransport(app=dispatcher)
            async with httpx.AsyncClient(
                transport=transport, base_url=settings.public_base_url
            ) as plain:
                yield dispatcher, plain

    return opened()


def dpop_client(
    plain: httpx.AsyncClient, settings: Settings, credentials: tuple[str, str]
) -> tuple[httpx.AsyncClient, DPoPClientCredentialsAuth]:
    auth = DPoPClientCredentialsAuth(f"{settings.public_base_url}{TOKEN_PATH}", *credentials)
    http = httpx.AsyncClient(
        transport=plain._transport, base_url=settings.public_base_url, auth=auth
    )
    return http, auth


async def test_concurrent_requests_share_one_bound_token_each_with_its_own_proof(
    world: tuple[Dispatcher, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """50 requests at once: one token request, a token bound to the auth's key, and 50 proofs
    the verifier accepts (it refuses a replayed one, so each is new and names its token)."""
    dispatcher, plain = world
    credentials = await create_client(db, settings, scope="read")
    http, auth = dpop_client(plain, settings, credentials)
    tokens: list[str] = []

    async def remember_token(response: httpx.Response) -> None:
        if response.request.url.path == TOKEN_PATH:
            await response.aread()
            tokens.append(response.json()["access_token"])

    http.event_hooks["response"].append(remember_token)
    async with http:
        responses = await asyncio.gather(*(http.get("/api/data") for _ in range(50)))

    assert [response.status_code for response in responses] == [200] * 50
    assert dispatcher.counts[TOKEN_PATH] == 1
    assert claims_of(tokens[0])["cnf"] == {"jkt": auth.key.jkt}


async def test_a_copy_of_the_token_is_useless_without_the_key(
    world: tuple[Dispatcher, httpx.AsyncClient],
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """The token the auth holds, sent as a bearer by someone else: 403 invalid_token."""
    _, plain = world
    credentials = await create_client(db, settings, scope="read")
    http, auth = dpop_client(plain, settings, credentials)
    async with http:
        assert (await http.get("/api/data")).status_code == 200
    stolen = auth._cache.current(None)  # the token held for the service itself

    copied = await plain.get("/api/data", headers={"Authorization": f"Bearer {stolen}"})

    assert (copied.status_code, copied.json()["error"]) == (403, "invalid_token")


async def test_nonces_asked_for_are_used_after_one_retry_each(
    settings: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    create_client: CreateClient,
) -> None:
    """DPOP_NONCE at the service and nonces at the API: the first token request and the first
    API request are each refused once (use_dpop_nonce) and retried with the nonce; the next
    request carries the API's nonce from the start."""
    with_nonces = replace(settings, dpop_nonce=True)
    verifier = shared_secret_verifier(settings, clock, dpop_nonces=API_NONCES)
    async with in_process(with_nonces, clock, verifier) as (dispatcher, plain):
        credentials = await create_client(db, settings, scope="read")
        http, _ = dpop_client(plain, with_nonces, credentials)
        async with http:
            first = await http.get("/api/data")
            second = await http.get("/api/data")

    assert (first.status_code, second.status_code) == (200, 200)
    assert dispatcher.counts[TOKEN_PATH] == 2
    assert dispatcher.counts["/api/data"] == 3


async def test_a_nonce_handed_out_with_a_success_spares_the_next_refusal(
    settings: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    create_client: CreateClient,
) -> None:
    """Nonces at the service and the API: after the first refusal of each, the API hands out
    its next nonce with a success, and the auth uses it, so a call two periods later (when
    the first nonce is stale) goes through at once."""
    with_nonces = replace(settings, dpop_nonce=True)
    verifier = shared_secret_verifier(settings, clock, dpop_nonces=API_NONCES)
    async with in_process(with_nonces, clock, verifier) as (dispatcher, plain):
        credentials = await create_client(db, settings, scope="read")
        auth = DPoPClientCredentialsAuth(
            f"{with_nonces.public_base_url}{TOKEN_PATH}", *credentials, wall_clock=clock
        )
        http = httpx.AsyncClient(
            transport=plain._transport, base_url=with_nonces.public_base_url, auth=auth
        )
        async with http:
            statuses = [(await http.get("/api/data")).status_code]
            calls = [dispatcher.counts["/api/data"]]
            for _ in range(2):
                # The first second of the next period: the nonce in hand is last period's.
                clock.advance(NONCE_STEP - int(clock.now.timestamp()) % NONCE_STEP)
                statuses.append((await http.get("/api/data")).status_code)
                calls.append(dispatcher.counts["/api/data"])

    assert statuses == [200, 200, 200]
    assert calls == [2, 3, 4]  # one refusal in all, at the start
    assert dispatcher.counts[TOKEN_PATH] == 2


async def test_the_nonce_of_the_retried_answer_is_the_one_kept() -> None:
    """An API that asks for nonce-1, then names nonce-2 in the retry's success: the next
    request signs nonce-2 at once, with no refusal in between."""
    signed: list[str | None] = []
    refused = False

    def server(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if request.url.path == TOKEN_PATH:
            body = {"access_token": "a.b.c", "token_type": "DPoP", "expires_in": 600}
            return httpx.Response(200, json=body)
        nonce = proof_claims(request.headers["dpop"]).get("nonce")
        signed.append(nonce)
        if not refused:
            refused = True
            challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": "nonce-1"}
            return httpx.Response(401, headers=challenge)
        expected = "nonce-1" if len(signed) == 2 else "nonce-2"
        if nonce != expected:
            return httpx.Response(401, headers={"WWW-Authenticate": 'DPoP error="use_dpop_nonce"'})
        return httpx.Response(200, headers={"DPoP-Nonce": "nonce-2"})

    auth = DPoPClientCredentialsAuth("https://auth.example/oauth/token", "id", "secret")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server), auth=auth) as http:
        first = await http.get("https://api.example/data")
        second = await http.get("https://api.example/data")

    assert (first.status_code, second.status_code) == (200, 200)
    assert signed == [None, "nonce-1", "nonce-2"]


async def test_a_token_endpoint_that_does_not_bind_the_token_is_an_error() -> None:
    """A server answering token_type Bearer ignored the proof: the auth raises, and the API is
    never sent the unbound token."""
    asked: list[str] = []

    def bearer_server(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        body = {"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 60}
        return httpx.Response(200, json=body)

    auth = DPoPClientCredentialsAuth("https://auth.example/oauth/token", "id", "secret")
    transport = httpx.MockTransport(bearer_server)
    async with httpx.AsyncClient(transport=transport, auth=auth) as http:
        with pytest.raises(httpx.DecodingError):
            await http.get("https://api.example/data")

    assert asked == [TOKEN_PATH]


@pytest.fixture
def live_world(settings: Settings, clock: FakeClock) -> Iterator[tuple[str, Settings]]:
    with served_on_a_socket(settings, clock) as served:
        yield served


@contextlib.contextmanager
def served_on_a_socket(settings: Settings, clock: FakeClock) -> Iterator[tuple[str, Settings]]:
    """The service (DPOP_NONCE on) and a DPoP-aware API with nonces of its own under /api,
    served by uvicorn on a real socket (own thread), the service publishing that socket's URL,
    so proofs name what a client really calls."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    served = replace(settings, public_url=f"http://{host}:{port}", dpop_nonce=True)
    verifier = shared_secret_verifier(served, clock, dpop_nonces=API_NONCES)
    dispatcher = Dispatcher(create_app(served, clock=clock), api=resource_app(verifier))
    server = uvicorn.Server(
        uvicorn.Config(dispatcher, log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield served.public_base_url, served
    server.should_exit = True
    thread.join(timeout=30)
    listener.close()


async def test_a_sync_client_over_a_real_socket(
    live_world: tuple[str, Settings], db: asyncpg.Connection, create_client: CreateClient
) -> None:
    """httpx.Client (the sync flow), nonces on both sides, POST with a body kept for the retry."""
    base_url, served = live_world
    credentials = await create_client(db, served, scope="read")
    auth = DPoPClientCredentialsAuth(f"{base_url}{TOKEN_PATH}", *credentials)

    def calls() -> list[httpx.Response]:
        with httpx.Client(base_url=base_url, auth=auth) as http:
            return [http.post("/api/echo", content=b"kept"), http.get("/api/data")]

    echoed, data = await asyncio.to_thread(calls)

    assert echoed.json() == {"body": "kept"}
    assert data.json() == {"sub": credentials[0]}
