"""DPoP at /oauth/token (RFC 9449 §5): client_credentials tokens bound to the client's key, each
proof accepted once by any instance, bad proofs refused before anything is minted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from requests_oauth2client import DPoPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.dpop import access_token_hash, thumbprint
from tokenrota.verify import TokenVerifier, protect, token_claims
from tokenrota_server.config import Settings
from tokenrota_server.db.purge import delete_expired_batch

from tests.dpop_support import Signer, stamp
from tests.oauth_support import basic, claims_of
from tests.support import CreateClient, FakeClock, Serve


@pytest.fixture(scope="module")
def holder() -> Signer:
    """The calling service's DPoP key."""
    return Signer("ES256")


def token_url(settings: Settings) -> str:
    return f"{settings.public_base_url}/oauth/token"


async def ask(
    client: httpx.AsyncClient, credentials: tuple[str, str], proofs: list[str], **form: str
) -> httpx.Response:
    """POST /oauth/token (client_credentials) with these DPoP headers."""
    headers = [*basic(*credentials).items(), *(("DPoP", proof) for proof in proofs)]
    return await client.post(
        "/oauth/token", data={"grant_type": "client_credentials", **form}, headers=headers
    )


def proof_at(signer: Signer, settings: Settings, clock: FakeClock, **claims: Any) -> str:
    return signer.proof(htu=token_url(settings), iat=stamp(clock.now), **claims)


async def proofs_recorded(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM dpop_proofs")
    return count


async def test_a_proof_binds_the_client_token_to_its_key(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """token_type DPoP, cnf.jkt the key's thumbprint; without a proof, a plain Bearer as before."""
    credentials = await create_client(db, settings)

    bound = await ask(client, credentials, [proof_at(holder, settings, clock)])
    plain = await ask(client, credentials, [])

    assert bound.status_code == 200
    assert bound.json()["token_type"] == "DPoP"
    assert claims_of(bound.json()["access_token"])["cnf"] == {"jkt": thumbprint(holder.jwk)}
    assert plain.json()["token_type"] == "Bearer"
    assert "cnf" not in claims_of(plain.json()["access_token"])


async def test_introspection_shows_the_binding(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """RFC 9449 §6.2: an introspecting resource server learns the key to demand."""
    credentials = await create_client(db, settings)
    token = (await ask(client, credentials, [proof_at(holder, settings, clock)])).json()

    answer = await client.post(
        "/oauth/introspect", data={"token": token["access_token"]}, headers=basic(*credentials)
    )

    assert answer.json()["cnf"] == {"jkt": thumbprint(holder.jwk)}
    assert answer.json()["token_type"] == "DPoP"


async def test_a_proof_is_accepted_once_across_instances(
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    serve: Serve,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """The same proof at a second instance on the same database is a replay: 400."""
    credentials = await create_client(db, settings)
    proof = proof_at(holder, settings, clock)

    async with serve(settings, clock) as first, serve(settings, clock) as second:
        accepted = await ask(first, credentials, [proof])
        replayed = await ask(second, credentials, [proof])

    assert accepted.status_code == 200
    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_dpop_proof")


@pytest.mark.parametrize(
    "change",
    [
        {"htm": "GET"},
        {"htu": "http://elsewhere.example/oauth/token"},
        {"htu": "RELATIVE"},
        {"typ": "JWT"},
        {"alg": "HS256"},
        {"iat": -120},
        {"iat": 30},
        {"jti": None},
        {"private": True},
    ],
    ids=lambda change: ",".join(change),
)
async def test_a_bad_proof_is_refused_and_mints_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
    change: dict[str, Any],
) -> None:
    """400 invalid_dpop_proof, no token, and no proof recorded."""
    credentials = await create_client(db, settings)
    header: dict[str, Any] = {}
    claims: dict[str, Any] = {}
    if "typ" in change or "alg" in change:
        header = dict(change)
    elif change.get("private"):
        header = {"jwk": holder.private}
    elif change.get("htu") == "RELATIVE":
        claims = {"htu": "/oauth/token"}
    elif "iat" in change:
        claims = {"iat": stamp(clock.now) + change["iat"]}
    else:
        claims = dict(change)
    claims.setdefault("iat", stamp(clock.now))
    claims.setdefault("htu", token_url(settings))

    response = await ask(client, credentials, [holder.proof(header, **claims)])

    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    assert "access_token" not in response.json()
    assert await proofs_recorded(db) == 0


async def test_two_proofs_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """One DPoP header per request (§4.3 step 1)."""
    credentials = await create_client(db, settings)
    proofs = [proof_at(holder, settings, clock), proof_at(holder, settings, clock)]

    response = await ask(client, credentials, proofs)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")


async def test_a_strangers_proof_is_not_recorded(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    holder: Signer,
) -> None:
    """Client authentication comes first: a failed one writes no proof row."""
    response = await ask(client, ("nobody", "wrong"), [proof_at(holder, settings, clock)])

    assert response.status_code == 401
    assert await proofs_recorded(db) == 0


async def test_a_proof_by_requests_oauth2client_is_accepted(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
) -> None:
    """An independent DPoP client's proof (jwskate, real time) binds the token to its key."""
    credentials = await create_client(db, settings)
    key = DPoPKey.generate(alg="ES256")
    clock.now = datetime.now(UTC).replace(microsecond=0)

    response = await ask(client, credentials, [str(key.proof(htm="POST", htu=token_url(settings)))])

    assert response.status_code == 200
    assert claims_of(response.json()["access_token"])["cnf"]["jkt"] == (
        key.private_key.public_jwk().thumbprint()
    )


async def test_a_resource_server_takes_the_bound_token_only_with_its_proof(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    holder: Signer,
) -> None:
    """End to end: the service's bound token at tokenrota.verify, with a proof and as a bearer."""
    credentials = await create_client(db, settings)
    token = (await ask(client, credentials, [proof_at(holder, settings, clock)])).json()
    access = token["access_token"]
    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        clock=clock,
    )

    async def data(request: Request) -> Response:
        return JSONResponse({"client": token_claims(request).client_id})

    app = Starlette(routes=[Route("/data", data)], middleware=[protect(verifier)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        proof = holder.proof(
            htm="GET", htu="http://api/data", iat=stamp(clock.now), ath=access_token_hash(access)
        )
        with_proof = await api.get(
            "/data", headers={"Authorization": f"DPoP {access}", "DPoP": proof}
        )
        as_bearer = await api.get("/data", headers={"Authorization": f"Bearer {access}"})

    assert with_proof.json() == {"client": credentials[0]}
    assert (as_bearer.status_code, as_bearer.json()["error"]) == (403, "invalid_token")


async def test_the_metadata_lists_the_proof_algorithms(client: httpx.AsyncClient) -> None:
    """RFC 8414 + RFC 9449 §5.1: dpop_signing_alg_values_supported."""
    response = await client.get("/.well-known/oauth-authorization-server")

    assert response.json()["dpop_signing_alg_values_supported"] == [
        "ES256",
        "EdDSA",
        "Ed25519",
        "RS256",
        "PS256",
    ]


async def test_the_purge_forgets_proofs_past_their_window(db: asyncpg.Connection) -> None:
    """A recorded proof is deleted once it would be refused as too old anyway, not before."""
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO dpop_proofs (jkt, jti, expires_at) VALUES ('k', 'old', $1), ('k', 'new', $2)",
        now - timedelta(seconds=1),
        now + timedelta(seconds=60),
    )

    batch = await delete_expired_batch(db, now=now, throttle_window=900, batch_size=100, leeway=30)

    assert batch.dpop_proofs == 1
    assert await db.fetchval("SELECT array_agg(jti) FROM dpop_proofs") == ["new"]
