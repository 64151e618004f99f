"""tokenrota.verify: a resource server accepting our tokens and refusing forged ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.verify import (
    Introspection,
    JwksKeys,
    TokenVerifier,
    protect,
    requires_scope,
    token_claims,
)
from tokenrota_server.config import Settings
from tokenrota_server.tokens import TokenCodec

from tests.conftest import FakeClock, register_and_login, serve
from tests.oauth_support import (
    FakeMonotonic,
    basic,
    claims_of,
    client_token,
    create_client,
    header_of,
    running_app,
)


def resource_server(verifier: TokenVerifier) -> Starlette:
    """A small API: /data needs scope read, /admin needs scope admin."""

    @requires_scope("read")
    async def data(request: Request) -> Response:
        claims = token_claims(request)
        return JSONResponse({"sub": claims.subject, "client_id": claims.client_id})

    @requires_scope("admin")
    async def admin(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/data", data), Route("/admin", admin)], middleware=[protect(verifier)]
    )


def api(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], mac_key: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = (
        hmac.new(mac_key, signing_input.encode(), hashlib.sha256).digest() if mac_key else b""
    )
    return f"{signing_input}.{b64(signature)}"


async def get(http: httpx.AsyncClient, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await http.get(path, headers=headers)


@pytest.fixture
async def shared_secret_api(
    settings: Settings, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The resource server checking tokens with the shared HS256 secret."""
    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        clock=clock,
    )
    async with api(resource_server(verifier)) as http:
        yield http


async def test_shared_secret_accepts_our_tokens_and_gives_the_claims(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    shared_secret_api: httpx.AsyncClient,
) -> None:
    """A client token with scope read opens /data; the handler sees who called."""
    client_id, secret = await create_client(db, settings, scope="read")
    token = (await client_token(client, client_id, secret)).json()["access_token"]

    response = await get(shared_secret_api, "/data", token)

    assert response.status_code == 200
    assert response.json() == {"sub": client_id, "client_id": client_id}


async def test_shared_secret_refuses_forged_and_unfit_tokens(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    make_settings: Any,
    clock: FakeClock,
    shared_secret_api: httpx.AsyncClient,
) -> None:
    """alg none, a wrong secret, a wrong aud, a refresh token, expired, no scope: refused."""
    client_id, secret = await create_client(db, settings, scope="read write")
    token = (await client_token(client, client_id, secret)).json()["access_token"]
    write_only = (await client_token(client, client_id, secret, scope="write")).json()
    _, pair = await register_and_login(client)
    claims, header = claims_of(token), header_of(token)
    other_audience = TokenCodec(make_settings(token_audience="another-service"))
    foreign, _ = other_audience.mint_access(
        subject=client_id, client_id=client_id, scope="read", now=clock()
    )

    refused = {
        "none": forge({**header, "alg": "none"}, claims, None),
        "wrong secret": forge(header, claims, b"s" * 48),
        "refresh secret": forge(header, claims, str(settings.refresh_token_secret).encode()),
        "wrong aud": foreign,
        "refresh token": pair["refresh_token"],
        "not bearer": token[:-2],
    }
    statuses = {
        name: (await get(shared_secret_api, "/data", value)).status_code
        for name, value in refused.items()
    }
    scope_missing = await get(shared_secret_api, "/data", write_only["access_token"])
    admin = await get(shared_secret_api, "/admin", token)
    anonymous = await get(shared_secret_api, "/data", None)
    clock.advance(settings.access_token_ttl + settings.jwt_leeway)
    expired = await get(shared_secret_api, "/data", token)

    assert statuses == dict.fromkeys(refused, 401)
    assert scope_missing.status_code == 403
    assert scope_missing.json()["error"] == "insufficient_scope"
    assert admin.status_code == 403
    assert 'scope="admin"' in admin.headers["www-authenticate"]
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert expired.status_code == 401
    assert expired.json()["error"] == "invalid_token"
    assert expired.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    """A real RSA private key in PEM, made for this module."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_jwks_verifier_accepts_rsa_tokens_and_refuses_confusion(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection, rsa_pem: str
) -> None:
    """Through the JWKS: genuine RS256 passes; HS256 MACed with the public key, none, fail."""
    settings = make_settings(access_token_signing_key=Secret(rsa_pem))
    ticks = FakeMonotonic()
    async with serve(settings, clock) as service:
        jwks = JwksKeys("http://testserver/.well-known/jwks.json", service, clock=ticks)
        verifier = TokenVerifier(
            issuer=settings.token_issuer, audience=settings.token_audience, jwks=jwks, clock=clock
        )
        client_id, secret = await create_client(db, settings, scope="read")
        token = (await client_token(service, client_id, secret)).json()["access_token"]
        public_pem = serialization.load_pem_private_key(rsa_pem.encode(), None).public_key()
        pem_bytes = public_pem.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header, claims = header_of(token), claims_of(token)
        forged = [
            forge({**header, "alg": "HS256"}, claims, pem_bytes),
            forge({**header, "alg": "HS256"}, claims, str(settings.access_token_secret).encode()),
            forge({**header, "alg": "none"}, claims, None),
            forge({**header, "kid": "made-up"}, claims, b"x" * 32),
        ]

        async with api(resource_server(verifier)) as http:
            genuine = await get(http, "/data", token)
            statuses = [(await get(http, "/data", value)).status_code for value in forged]

    assert genuine.status_code == 200
    assert statuses == [401] * len(forged)
    assert jwks.fetches == 1  # the made-up kid came within the refetch interval


async def test_jwks_refetches_for_a_new_kid_but_rate_limited(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection, rsa_pem: str
) -> None:
    """After a key rotation the verifier refetches once; made-up kids cannot make it spin."""
    first = make_settings(access_token_signing_key=Secret(rsa_pem))
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_pem = new_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    rotated = make_settings(access_token_signing_key=Secret(new_pem))
    client_id, secret = await create_client(db, first, scope="read")
    ticks = FakeMonotonic()
    # The same URL answered by the service before and after its restart with the new key.
    behind_url = Forwarder()
    keys_http = httpx.AsyncClient(transport=httpx.ASGITransport(app=behind_url))
    jwks = JwksKeys("http://testserver/.well-known/jwks.json", keys_http, clock=ticks)
    verifier = TokenVerifier(
        issuer=first.token_issuer, audience=first.token_audience, jwks=jwks, clock=clock
    )

    async with api(resource_server(verifier)) as http, keys_http:
        async with running_app(first, clock) as service:
            behind_url.app = service
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=service), base_url="http://testserver"
            ) as before:
                old_token = (await client_token(before, client_id, secret)).json()["access_token"]
            old_status = (await get(http, "/data", old_token)).status_code
        async with running_app(rotated, clock) as service:
            behind_url.app = service
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=service), base_url="http://testserver"
            ) as after:
                new_token = (await client_token(after, client_id, secret)).json()["access_token"]
            too_soon = await get(http, "/data", new_token)
            ticks.advance(31)
            after_interval = await get(http, "/data", new_token)
            flood = [
                forge({**header_of(new_token), "kid": f"kid-{n}"}, claims_of(new_token), b"")
                for n in range(20)
            ]
            flood_statuses = [(await get(http, "/data", value)).status_code for value in flood]

    assert old_status == 200
    assert too_soon.status_code == 401
    assert after_interval.status_code == 200
    assert flood_statuses == [401] * 20
    assert jwks.fetches == 2


class Forwarder:
    """An ASGI app that passes everything to whichever app it currently holds."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def test_introspection_catches_a_revoked_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """A token revoked at the service still verifies locally, but not with liveness checks."""
    owner = await create_client(db, settings, scope="read")
    resource = await create_client(db, settings, scope="")
    token = (await client_token(client, *owner)).json()["access_token"]
    ticks = FakeMonotonic()
    introspection = Introspection(
        "http://testserver/oauth/introspect",
        client,
        client_id=resource[0],
        client_secret=resource[1],
        cache_ttl=5,
        clock=ticks,
    )
    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        introspection=introspection,
        clock=clock,
    )

    async with api(resource_server(verifier)) as http:
        before = await get(http, "/data", token)
        await client.post("/oauth/revoke", data={"token": token}, headers=basic(*owner))
        cached = await get(http, "/data", token)
        ticks.advance(6)
        after = await get(http, "/data", token)

    assert before.status_code == 200
    assert cached.status_code == 200  # within the cache: the documented staleness
    assert after.status_code == 401


def test_verifier_needs_exactly_one_key_source() -> None:
    """Neither or both of secret= and jwks= is a programming error."""
    with pytest.raises(ValueError, match="exactly one"):
        TokenVerifier(issuer="i", audience="a")
