"""DPoP policy at the service: server nonces (DPOP_NONCE), clients registered with
`dpop_bound_access_tokens`, DPOP_REQUIRED_FOR_SESSIONS, and the CORS headers a browser needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota.dpop import NONCE_STEP, access_token_hash, thumbprint
from tokenrota_server.config import Settings

from tests.dpop_support import Signer, stamp
from tests.oauth_support import basic, claims_of
from tests.support import PASSWORD, CreateClient, FakeClock, Register, serve


@pytest.fixture(scope="module")
def holder() -> Signer:
    return Signer("ES256")


@pytest.fixture
def nonce_settings(settings: Settings) -> Settings:
    return replace(settings, dpop_nonce=True)


@pytest.fixture
async def nonce_client(
    nonce_settings: Settings, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(nonce_settings, clock) as client:
        yield client


def post_proof(
    signer: Signer, settings: Settings, clock: FakeClock, path: str, **claims: Any
) -> str:
    return signer.proof(htu=f"{settings.public_base_url}{path}", iat=stamp(clock.now), **claims)


async def client_token(
    client: httpx.AsyncClient, credentials: tuple[str, str], proof: str | None
) -> httpx.Response:
    headers = basic(*credentials)
    if proof is not None:
        headers["DPoP"] = proof
    return await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=headers
    )


def assert_asks_for_a_nonce(response: httpx.Response) -> str:
    assert (response.status_code, response.json()["error"]) == (400, "use_dpop_nonce")
    assert "access_token" not in response.json()
    nonce: str = response.headers["dpop-nonce"]
    return nonce


# -- nonces ---------------------------------------------------------------------------------


async def test_with_nonces_the_token_endpoint_asks_for_one_then_accepts_it(
    nonce_client: httpx.AsyncClient,
    db: asyncpg.Connection,
    nonce_settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """A proof without a nonce: 400 use_dpop_nonce with DPoP-Nonce, no proof recorded; the
    proof made again with it: a bound token."""
    credentials = await create_client(db, nonce_settings)

    first = await client_token(
        nonce_client, credentials, post_proof(holder, nonce_settings, clock, "/oauth/token")
    )
    nonce = assert_asks_for_a_nonce(first)
    recorded = await db.fetchval("SELECT count(*) FROM dpop_proofs")
    second = await client_token(
        nonce_client,
        credentials,
        post_proof(holder, nonce_settings, clock, "/oauth/token", nonce=nonce),
    )

    assert recorded == 0
    assert second.status_code == 200
    assert claims_of(second.json()["access_token"])["cnf"] == {"jkt": thumbprint(holder.jwk)}


async def test_a_stale_nonce_is_refused_with_a_fresh_one(
    nonce_client: httpx.AsyncClient,
    db: asyncpg.Connection,
    nonce_settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """Two steps later the nonce is stale: use_dpop_nonce again, naming a new nonce."""
    credentials = await create_client(db, nonce_settings)
    old = assert_asks_for_a_nonce(
        await client_token(
            nonce_client, credentials, post_proof(holder, nonce_settings, clock, "/oauth/token")
        )
    )
    clock.advance(2 * NONCE_STEP)

    response = await client_token(
        nonce_client,
        credentials,
        post_proof(holder, nonce_settings, clock, "/oauth/token", nonce=old),
    )

    assert assert_asks_for_a_nonce(response) != old


async def test_a_nonce_from_one_instance_is_taken_by_another(
    nonce_settings: Settings,
    db: asyncpg.Connection,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """Derived from the shared secret, not stored per process: instance B takes A's nonce."""
    credentials = await create_client(db, nonce_settings)
    async with serve(nonce_settings, clock) as first, serve(nonce_settings, clock) as second:
        nonce = assert_asks_for_a_nonce(
            await client_token(
                first, credentials, post_proof(holder, nonce_settings, clock, "/oauth/token")
            )
        )
        response = await client_token(
            second,
            credentials,
            post_proof(holder, nonce_settings, clock, "/oauth/token", nonce=nonce),
        )

    assert response.status_code == 200


async def test_with_nonces_login_and_refresh_ask_for_one(
    nonce_client: httpx.AsyncClient,
    nonce_settings: Settings,
    clock: FakeClock,
    register: Register,
    holder: Signer,
) -> None:
    """/login before the password is looked at, and /refresh: use_dpop_nonce, then success."""
    user = await register(nonce_client)
    body = {"email": user["email"], "password": PASSWORD}

    async def login(**claims: Any) -> httpx.Response:
        proof = post_proof(holder, nonce_settings, clock, "/login", **claims)
        return await nonce_client.post("/login", json=body, headers={"DPoP": proof})

    nonce = assert_asks_for_a_nonce(await login())
    pair = (await login(nonce=nonce)).json()

    async def refresh(**claims: Any) -> httpx.Response:
        proof = post_proof(holder, nonce_settings, clock, "/refresh", **claims)
        return await nonce_client.post(
            "/refresh", json={"refresh_token": pair["refresh_token"]}, headers={"DPoP": proof}
        )

    refused = await refresh()
    refreshed = await refresh(nonce=nonce)

    assert pair["token_type"] == "DPoP"
    assert assert_asks_for_a_nonce(refused) == nonce
    assert refreshed.status_code == 200


async def test_with_nonces_the_services_routes_answer_with_a_dpop_challenge(
    nonce_client: httpx.AsyncClient,
    nonce_settings: Settings,
    clock: FakeClock,
    register: Register,
    holder: Signer,
) -> None:
    """/profile: 401, WWW-Authenticate: DPoP error="use_dpop_nonce", and DPoP-Nonce."""
    user = await register(nonce_client)
    body = {"email": user["email"], "password": PASSWORD}
    asked = await nonce_client.post(
        "/login", json=body, headers={"DPoP": post_proof(holder, nonce_settings, clock, "/login")}
    )
    nonce = asked.headers["dpop-nonce"]
    access = (
        await nonce_client.post(
            "/login",
            json=body,
            headers={"DPoP": post_proof(holder, nonce_settings, clock, "/login", nonce=nonce)},
        )
    ).json()["access_token"]

    def headers(**claims: Any) -> dict[str, str]:
        proof = holder.proof(
            htm="GET",
            htu=f"{nonce_settings.public_base_url}/profile",
            iat=stamp(clock.now),
            ath=access_token_hash(access),
            **claims,
        )
        return {"Authorization": f"DPoP {access}", "DPoP": proof}

    refused = await nonce_client.get("/profile", headers=headers())
    accepted = await nonce_client.get("/profile", headers=headers(nonce=nonce))

    assert (refused.status_code, refused.json()["error"]) == (401, "use_dpop_nonce")
    assert refused.headers["www-authenticate"].startswith('DPoP error="use_dpop_nonce"')
    assert refused.headers["dpop-nonce"] == nonce
    assert accepted.status_code == 200


def to_next_nonce_period(clock: FakeClock) -> None:
    """Move `clock` to the first second of the next nonce period."""
    clock.advance(NONCE_STEP - int(clock.now.timestamp()) % NONCE_STEP)


async def test_with_nonces_each_success_names_the_next_nonce(
    nonce_client: httpx.AsyncClient,
    nonce_settings: Settings,
    clock: FakeClock,
    register: Register,
    holder: Signer,
) -> None:
    """A token answer and a /profile answer carry DPoP-Nonce: a client that always uses the
    last one it was given is never refused again, however many rotations pass."""
    user = await register(nonce_client)
    body = {"email": user["email"], "password": PASSWORD}

    async def login(**claims: Any) -> httpx.Response:
        proof = post_proof(holder, nonce_settings, clock, "/login", **claims)
        return await nonce_client.post("/login", json=body, headers={"DPoP": proof})

    nonce = assert_asks_for_a_nonce(await login())
    handed_out, statuses = [], []
    for _ in range(3):
        answer = await login(nonce=nonce)
        statuses.append(answer.status_code)
        nonce = answer.headers["dpop-nonce"]
        handed_out.append(nonce)
        to_next_nonce_period(clock)
    access = answer.json()["access_token"]
    profile = await nonce_client.get(
        "/profile",
        headers={
            "Authorization": f"DPoP {access}",
            "DPoP": holder.proof(
                htm="GET",
                htu=f"{nonce_settings.public_base_url}/profile",
                iat=stamp(clock.now),
                ath=access_token_hash(access),
                nonce=nonce,
            ),
        },
    )

    assert statuses == [200, 200, 200]
    assert len(set(handed_out)) == 3  # a new one each period
    assert profile.status_code == 200
    assert profile.headers["dpop-nonce"] not in handed_out  # the period moved on again


async def test_with_nonces_an_answer_to_a_request_without_a_proof_names_none(
    nonce_client: httpx.AsyncClient,
    db: asyncpg.Connection,
    nonce_settings: Settings,
    create_client: CreateClient,
) -> None:
    """A bearer client's token answer carries no DPoP-Nonce: nonces are for DPoP clients."""
    credentials = await create_client(db, nonce_settings)

    response = await client_token(nonce_client, credentials, None)

    assert response.status_code == 200
    assert "dpop-nonce" not in response.headers


async def test_without_dpop_nonce_no_nonce_is_asked_for(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """Off by default: a proof without a nonce binds the token at once."""
    credentials = await create_client(db, settings)

    response = await client_token(
        client, credentials, post_proof(holder, settings, clock, "/oauth/token")
    )

    assert response.status_code == 200
    assert "dpop-nonce" not in response.headers


# -- proofs required ------------------------------------------------------------------------


async def bound_client(
    db: asyncpg.Connection, settings: Settings, create_client: CreateClient
) -> tuple[str, str]:
    credentials = await create_client(db, settings)
    await db.execute(
        "UPDATE clients SET dpop_bound_access_tokens = true WHERE client_id = $1", credentials[0]
    )
    return credentials


async def test_a_client_with_dpop_bound_access_tokens_gets_nothing_without_a_proof(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """RFC 9449 §5.2: its secret alone is 400 invalid_dpop_proof; with a proof, a bound token.
    Another client without the flag still gets a bearer token."""
    credentials = await bound_client(db, settings, create_client)
    other = await create_client(db, settings)

    refused = await client_token(client, credentials, None)
    bound = await client_token(
        client, credentials, post_proof(holder, settings, clock, "/oauth/token")
    )
    plain = await client_token(client, other, None)

    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_dpop_proof")
    assert "access_token" not in refused.json()
    assert bound.json()["token_type"] == "DPoP"
    assert plain.json()["token_type"] == "Bearer"


async def test_a_bad_proof_from_a_dpop_bound_client_is_refused_too(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """The flag asks for a valid proof, not any DPoP header."""
    credentials = await bound_client(db, settings, create_client)

    response = await client_token(
        client, credentials, post_proof(holder, settings, clock, "/oauth/token", htm="GET")
    )

    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")


async def test_with_dpop_required_for_sessions_a_login_without_a_proof_is_refused(
    make_settings: Any,
    db: asyncpg.Connection,
    clock: FakeClock,
    register: Register,
    holder: Signer,
) -> None:
    """DPOP_REQUIRED_FOR_SESSIONS: 400 invalid_dpop_proof whatever the password (checked
    first, so the answer says nothing of it), no session written; with a proof, a bound pair."""
    required = make_settings(dpop_required_for_sessions=True)
    async with serve(required, clock) as client:
        user = await register(client)
        right = await client.post("/login", json={"email": user["email"], "password": PASSWORD})
        wrong = await client.post("/login", json={"email": user["email"], "password": "nope"})
        sessions = await db.fetchval("SELECT count(*) FROM sessions")
        bound = await client.post(
            "/login",
            json={"email": user["email"], "password": PASSWORD},
            headers={"DPoP": post_proof(holder, required, clock, "/login")},
        )

    for refused in (right, wrong):
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_dpop_proof")
    assert right.json() == wrong.json()
    assert sessions == 0
    assert bound.json()["token_type"] == "DPoP"


# -- CORS -----------------------------------------------------------------------------------


async def test_cors_lets_a_browser_send_dpop_and_read_the_nonce(
    make_settings: Any, clock: FakeClock, holder: Signer
) -> None:
    """The preflight allows the DPoP header; answers expose DPoP-Nonce to the page's script."""
    origin = "https://app.example"
    browser = make_settings(allowed_origins=(origin,), dpop_nonce=True)
    async with serve(browser, clock) as client:
        preflight = await client.options(
            "/login",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, dpop",
            },
        )
        asked = await client.post(
            "/login",
            json={"email": "someone@example.com", "password": PASSWORD},
            headers={"Origin": origin, "DPoP": post_proof(holder, browser, clock, "/login")},
        )

    assert preflight.status_code == 200
    assert "dpop" in preflight.headers["access-control-allow-headers"].lower()
    assert "dpop-nonce" in asked.headers["access-control-expose-headers"].lower()
    assert "dpop-nonce" in asked.headers
