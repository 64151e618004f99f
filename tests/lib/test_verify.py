"""tokenrota.verify: a resource server that accepts our tokens, refuses forged ones, fails
closed, and answers every refusal exactly as the service's own bearer routes do."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
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
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
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

PUBLIC = ["/healthz", "/docs/"]
EXPIRED_CHALLENGE = 'Bearer error="invalid_token", error_description="The token has expired."'
INVALID_CHALLENGE = 'Bearer error="invalid_token", error_description="The token is invalid."'


def resource_server(verifier: TokenVerifier) -> Starlette:
    """A small API behind `protect(verifier, public=PUBLIC)`: /data needs scope read, /admin
    scope admin, /plain any valid token (no decorator), /healthz and /docs/... are public."""

    @requires_scope("read")
    async def data(request: Request) -> Response:
        claims = token_claims(request)
        return JSONResponse({"sub": claims.subject, "client_id": claims.client_id})

    @requires_scope("admin")
    async def admin(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def who(request: Request) -> Response:
        user = request.user
        return JSONResponse({"sub": user.identity if user.is_authenticated else None})

    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": token_claims(websocket).subject})
        await websocket.close()

    return Starlette(
        routes=[
            Route("/data", data),
            Route("/admin", admin),
            Route("/plain", who),
            Route("/healthz", who),
            Route("/healthz/", who),
            Route("/docs", who),
            Route("/docsx", who),
            Route("/docs/intro", who),
            Route("/docs/scoped", data),
            WebSocketRoute("/feed", feed),
        ],
        middleware=[protect(verifier, public=PUBLIC)],
    )


def answer(response: httpx.Response) -> tuple[int, str | None, str | None]:
    """What a client sees of a refusal: the status, the body's error, the challenge.

    The challenge without its `resource_metadata`, which only a resource server names (every
    refusal of one carries it: tests/lib/test_resource_metadata.py), to compare with the service's.
    """
    error = response.json().get("error") if response.status_code != 200 else None
    challenge = response.headers.get("www-authenticate")
    if challenge is not None:
        challenge = re.sub(r',? ?resource_metadata="[^"]*"', "", challenge)
    return response.status_code, error, challenge


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


def shared_secret_verifier(settings: Settings, clock: FakeClock) -> TokenVerifier:
    """A verifier with the service's HS256 secret, on the test's clock."""
    return TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        clock=clock,
    )


@pytest.fixture
async def shared_secret_api(
    settings: Settings, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The resource server checking tokens with the shared HS256 secret."""
    async with api(resource_server(shared_secret_verifier(settings, clock))) as http:
        yield http


@pytest.fixture
async def read_token(client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings) -> str:
    """A client access token with scope read."""
    client_id, secret = await create_client(db, settings, scope="read")
    token: str = (await client_token(client, client_id, secret)).json()["access_token"]
    return token


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
    """alg none, a wrong secret, a wrong aud, a refresh token: 403 invalid_token; expired: 403
    token_expired; no token: 401; a missing scope: 403 insufficient_scope naming it."""
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
        name: answer(await get(shared_secret_api, "/data", value))
        for name, value in refused.items()
    }
    scope_missing = await get(shared_secret_api, "/data", write_only["access_token"])
    admin = await get(shared_secret_api, "/admin", token)
    anonymous = await get(shared_secret_api, "/data", None)
    clock.advance(settings.access_token_ttl + settings.jwt_leeway)
    expired = await get(shared_secret_api, "/data", token)

    assert statuses == dict.fromkeys(refused, (403, "invalid_token", INVALID_CHALLENGE))
    assert answer(scope_missing)[:2] == (403, "insufficient_scope")
    assert answer(admin) == (
        403,
        "insufficient_scope",
        'Bearer error="insufficient_scope", '
        'error_description="The token lacks a required scope.", scope="admin"',
    )
    assert answer(anonymous) == (401, "missing_token", "Bearer")
    assert answer(expired) == (403, "token_expired", EXPIRED_CHALLENGE)


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
    assert statuses == [403] * len(forged)
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
    assert too_soon.status_code == 403
    assert after_interval.status_code == 200
    assert flood_statuses == [403] * 20
    assert jwks.fetches == 2


class Forwarder:
    """An ASGI app that passes everything to whichever app it currently holds."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def test_introspection_catches_a_revoked_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """A token revoked at the service still verifies locally, but not with liveness checks:
    inactive at introspection is 403 invalid_token."""
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
    assert answer(after) == (403, "invalid_token", INVALID_CHALLENGE)


def test_verifier_needs_exactly_one_key_source() -> None:
    """Neither or both of secret= and jwks= is a programming error."""
    with pytest.raises(ValueError, match="exactly one"):
        TokenVerifier(issuer="i", audience="a")


# -- fail closed -------------------------------------------------------------------------------


async def test_a_route_without_a_decorator_is_closed(
    shared_secret_api: httpx.AsyncClient, read_token: str
) -> None:
    """protect() guards every route: no token 401, a bad one 403, a valid one passes."""
    anonymous = await get(shared_secret_api, "/plain", None)
    garbage = await get(shared_secret_api, "/plain", "not.a.token")
    valid = await get(shared_secret_api, "/plain", read_token)

    assert answer(anonymous) == (401, "missing_token", "Bearer")
    assert answer(garbage) == (403, "invalid_token", INVALID_CHALLENGE)
    assert valid.status_code == 200
    assert valid.json()["sub"] == claims_of(read_token)["sub"]


async def test_public_paths_open_exactly_what_they_list(
    shared_secret_api: httpx.AsyncClient,
) -> None:
    """ "/healthz" is one path; "/docs/" is a prefix that opens neither "/docs" nor "/docsx"."""
    paths = ["/healthz", "/docs/intro", "/healthz/", "/docs", "/docsx", "/Healthz", "/plain"]

    statuses = {path: (await get(shared_secret_api, path, None)).status_code for path in paths}

    assert statuses == {
        "/healthz": 200,
        "/docs/intro": 200,
        "/healthz/": 401,
        "/docs": 401,
        "/docsx": 401,
        "/Healthz": 401,
        "/plain": 401,
    }


async def test_a_token_on_a_public_path_is_still_checked(
    shared_secret_api: httpx.AsyncClient, read_token: str, settings: Settings, clock: FakeClock
) -> None:
    """A valid token names the caller there; a bad one is refused, so a client can refresh;
    a scoped route under a public prefix still needs its token."""
    valid = await get(shared_secret_api, "/healthz", read_token)
    garbage = await get(shared_secret_api, "/healthz", "not.a.token")
    scoped_anonymous = await get(shared_secret_api, "/docs/scoped", None)
    scoped = await get(shared_secret_api, "/docs/scoped", read_token)
    clock.advance(settings.access_token_ttl + settings.jwt_leeway)
    expired = await get(shared_secret_api, "/healthz", read_token)

    assert valid.json() == {"sub": claims_of(read_token)["sub"]}
    assert answer(garbage) == (403, "invalid_token", INVALID_CHALLENGE)
    assert answer(scoped_anonymous) == (401, "missing_token", "Bearer")
    assert scoped.status_code == 200
    assert answer(expired) == (403, "token_expired", EXPIRED_CHALLENGE)


async def test_unknown_paths_and_methods_are_refused_before_routing(
    shared_secret_api: httpx.AsyncClient, read_token: str
) -> None:
    """Without a valid token a caller cannot tell a missing route from a guarded one: every
    non-public path is 401 (403 with a bad token); with a valid token, 404 and 405 as usual."""
    bearer = {"Authorization": f"Bearer {read_token}"}

    anonymous = [
        await shared_secret_api.get("/nowhere"),
        await shared_secret_api.post("/data"),
        await shared_secret_api.options("/data"),
    ]
    bad = await get(shared_secret_api, "/nowhere", "not.a.token")
    missing = await shared_secret_api.get("/nowhere", headers=bearer)
    wrong_method = await shared_secret_api.post("/data", headers=bearer)

    assert [answer(response) for response in anonymous] == [(401, "missing_token", "Bearer")] * 3
    assert answer(bad) == (403, "invalid_token", INVALID_CHALLENGE)
    assert missing.status_code == 404
    assert wrong_method.status_code == 405


async def test_public_paths_are_relative_to_a_mounted_app(
    settings: Settings, clock: FakeClock
) -> None:
    """Mounted under /api, the API's "/healthz" is /api/healthz; the outer /healthz is not it."""
    outer = Starlette(
        routes=[Mount("/api", app=resource_server(shared_secret_verifier(settings, clock)))]
    )

    async with api(outer) as http:
        public = await get(http, "/api/healthz", None)
        guarded = await get(http, "/api/plain", None)
        prefix = await get(http, "/api/docs/intro", None)

    assert public.status_code == 200
    assert guarded.status_code == 401
    assert prefix.status_code == 200


def test_public_paths_must_start_with_a_slash() -> None:
    """A typo such as "healthz" would silently open nothing, or "" everything: both refused,
    when protect() is called rather than at the first request."""
    verifier = TokenVerifier(issuer="i", audience="https://a.example", secret="s" * 32)

    for public in (["healthz"], [""], ["/ok", "docs/"]):
        with pytest.raises(ValueError, match="starts with '/'"):
            protect(verifier, public=public)
    assert protect(verifier, public="/healthz").kwargs["public"] == ("/healthz",)


async def handshake(
    app: Starlette, token: str | None, *, denial_extension: bool = True
) -> list[dict[str, Any]]:
    """Open /feed as an ASGI server would; return every message the app sent."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/feed",
        "raw_path": b"/feed",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("api", 80),
        "client": ("127.0.0.1", 5000),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial_extension else {},
    }
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websockets_are_closed_too(
    settings: Settings, clock: FakeClock, read_token: str
) -> None:
    """A handshake without a token is denied with the same 401 (403 for a bad token), or closed
    with 1008 where the server cannot send a denial response; a valid token opens the socket."""
    app = resource_server(shared_secret_verifier(settings, clock))

    anonymous = await handshake(app, None)
    bad = await handshake(app, "not.a.token")
    no_extension = await handshake(app, None, denial_extension=False)
    valid = await handshake(app, read_token)

    assert anonymous[0]["type"] == "websocket.http.response.start"
    assert anonymous[0]["status"] == 401
    assert json.loads(anonymous[1]["body"])["error"] == "missing_token"
    assert bad[0]["status"] == 403
    assert json.loads(bad[1]["body"])["error"] == "invalid_token"
    assert no_extension == [{"type": "websocket.close", "code": 1008}]
    assert [message["type"] for message in valid] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert json.loads(valid[1]["text"]) == {"sub": claims_of(read_token)["sub"]}


# -- one convention: the service and the verifier answer alike ---------------------------------


async def test_the_service_and_the_verifier_refuse_alike(
    client: httpx.AsyncClient,
    shared_secret_api: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
) -> None:
    """The same request to the service's /profile and to a protected route gets the same
    status, error code and challenge: missing, malformed, forged, refresh token, expired."""
    _, pair = await register_and_login(client)
    token = pair["access_token"]
    cases: dict[str, list[tuple[str, str]]] = {
        "no header": [],
        "another scheme": [("Authorization", "Basic dXNlcjpwYXNz")],
        "bearer alone": [("Authorization", "Bearer")],
        "two headers": [("Authorization", f"Bearer {token}")] * 2,
        "two spaces": [("Authorization", f"Bearer  {token}")],
        "garbage": [("Authorization", "Bearer not.a.token")],
        "refresh token": [("Authorization", f"Bearer {pair['refresh_token']}")],
        "valid": [("Authorization", f"Bearer {token}")],
    }

    async def both(headers: list[tuple[str, str]]) -> tuple[Any, Any]:
        service = await client.get("/profile", headers=headers)
        verifier = await shared_secret_api.get("/plain", headers=headers)
        return answer(service), answer(verifier)

    answers = {name: await both(headers) for name, headers in cases.items()}
    clock.advance(settings.access_token_ttl + settings.jwt_leeway)
    answers["expired"] = await both(cases["valid"])

    assert {name: service for name, (service, _) in answers.items()} == {
        name: verifier for name, (_, verifier) in answers.items()
    }
    assert {name: service for name, (service, _) in answers.items()} == {
        "no header": (401, "missing_token", "Bearer"),
        "another scheme": (401, "missing_token", "Bearer"),
        "bearer alone": (401, "missing_token", "Bearer"),
        "two headers": (403, "invalid_token", INVALID_CHALLENGE),
        "two spaces": (403, "invalid_token", INVALID_CHALLENGE),
        "garbage": (403, "invalid_token", INVALID_CHALLENGE),
        "refresh token": (403, "invalid_token", INVALID_CHALLENGE),
        "valid": (200, None, None),
        "expired": (403, "token_expired", EXPIRED_CHALLENGE),
    }


async def test_a_revoked_session_is_invalid_token_on_both_sides(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """After /logout/all, the service's /profile and a verifier asking introspection both
    answer the session's access token with 403 invalid_token."""
    resource = await create_client(db, settings, scope="")
    introspection = Introspection(
        "http://testserver/oauth/introspect",
        client,
        client_id=resource[0],
        client_secret=resource[1],
        cache_ttl=0,
    )
    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        introspection=introspection,
        clock=clock,
    )
    _, pair = await register_and_login(client)
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}

    async with api(resource_server(verifier)) as http:
        before = await http.get("/plain", headers=bearer)
        assert (await client.post("/logout/all", headers=bearer)).status_code == 204
        service = await client.get("/profile", headers=bearer)
        resource_answer = await http.get("/plain", headers=bearer)

    assert before.status_code == 200
    assert answer(service) == answer(resource_answer) == (403, "invalid_token", INVALID_CHALLENGE)
