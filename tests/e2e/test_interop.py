"""A third-party OAuth 2.0 client (Authlib's httpx integration) against the running service."""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.datastructures import Secret
from tokenrota_server.config import Settings
from tokenrota_server.db.resources import GrantKind

from tests.audience_support import ACCESS_TOKEN_TYPE, EXCHANGE, grant
from tests.oauth_support import claims_of
from tests.support import PASSWORD, CreateClient, FakeClock, RegisterAndLogin, Serve

with warnings.catch_warnings():
    # Authlib 1.9 prefers the `httpx2` fork and warns when it finds plain httpx; we use httpx.
    # Its own import installs an "always" filter for that warning, so ours must come after.
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.filterwarnings("ignore", "The httpx module", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

TOKEN_URL = "https://testserver/oauth/token"


def authlib_client(service: httpx.AsyncClient, **options: Any) -> AsyncOAuth2Client:
    """Authlib's client on the service's in-process transport (https: Authlib insists)."""
    return AsyncOAuth2Client(transport=service._transport, base_url="https://testserver", **options)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_client_credentials(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    method: str,
    create_client: CreateClient,
) -> None:
    """Authlib fetches a token with either authentication method and narrows the scope."""
    client_id, secret = await create_client(db, settings, scope="read write")

    async with authlib_client(
        client,
        client_id=client_id,
        client_secret=secret,
        scope="read",
        token_endpoint_auth_method=method,
    ) as oauth:
        token = await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")
        introspected = await oauth.introspect_token(
            "https://testserver/oauth/introspect", token=token["access_token"]
        )
        revoked = await oauth.revoke_token(
            "https://testserver/oauth/revoke", token=token["access_token"]
        )
        after = await oauth.introspect_token(
            "https://testserver/oauth/introspect", token=token["access_token"]
        )

    assert token["token_type"] == "Bearer"
    assert token["scope"] == "read"
    assert "refresh_token" not in token
    assert token["expires_at"] > 0
    assert claims_of(token["access_token"])["client_id"] == client_id
    assert introspected.json()["active"] is True
    assert revoked.status_code == 200
    assert after.json() == {"active": False}


async def test_authlib_refresh_token_grant(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """Authlib refreshes a user's token pair; the old refresh token is spent, the new one works."""
    client_id, secret = await create_client(db, settings, scope="")
    _, pair = await register_and_login(client)

    async with authlib_client(
        client, client_id=client_id, client_secret=secret, token=dict(pair)
    ) as oauth:
        first = await oauth.refresh_token(TOKEN_URL, refresh_token=pair["refresh_token"])
        second = await oauth.refresh_token(TOKEN_URL)  # Authlib uses the token it holds

    assert first["refresh_token"] != pair["refresh_token"]
    assert second["refresh_token"] != first["refresh_token"]
    profile = await client.get(
        "/profile", headers={"Authorization": f"Bearer {second['access_token']}"}
    )
    assert profile.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL") == 1


async def test_authlib_sees_the_errors_of_rfc_6749(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """Authlib raises OAuthError with our RFC 6749 §5.2 codes."""
    from authlib.integrations.base_client.errors import OAuthError

    client_id, secret = await create_client(db, settings, scope="read")

    async with authlib_client(client, client_id=client_id, client_secret="wrong") as oauth:
        with pytest.raises(OAuthError) as wrong_secret:
            await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")
    async with authlib_client(
        client, client_id=client_id, client_secret=secret, scope="admin"
    ) as oauth:
        with pytest.raises(OAuthError) as wrong_scope:
            await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")

    assert wrong_secret.value.error == "invalid_client"
    assert wrong_scope.value.error == "invalid_scope"


async def test_metadata_passes_authlibs_rfc_8414_checks(
    make_settings: Any, clock: FakeClock, serve: Serve
) -> None:
    """With an https issuer, every field Authlib checks is valid (but one, see the README)."""
    settings = make_settings(token_issuer="https://testserver")

    async with serve(settings, clock) as service:
        body = (await service.get("/.well-known/oauth-authorization-server")).json()

    metadata = AuthorizationServerMetadata(body)
    checks = [name for name in dir(metadata) if name.startswith("validate_")]
    # RFC 8414 calls response_types_supported required; we serve no authorization endpoint,
    # so the truthful list is empty, which Authlib reads as missing.
    for name in checks:
        if name not in ("validate", "validate_response_types_supported"):
            getattr(metadata, name)()
    assert body["issuer"] == "https://testserver"
    assert body["token_endpoint"] == TOKEN_URL


async def test_authlib_asks_for_a_resource_and_exchanges_a_users_token(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """RFC 8707 `resource` with client_credentials, then RFC 8693 token exchange, from Authlib."""
    orders, billing = "https://orders.example/", "https://billing.example/"
    client_id, secret = await create_client(db, settings, scope="")
    await db.execute(
        "INSERT INTO resources (uri, name, scopes) VALUES ($1, 'orders', '{}'),"
        " ($2, 'billing', '{}')",
        orders,
        billing,
    )
    for uri, kind in (
        (orders, GrantKind.SERVES),
        (orders, GrantKind.TOKEN),
        (billing, GrantKind.EXCHANGE),
    ):
        await grant(db, client_id, uri, kind)
    user, _ = await register_and_login(client)
    subject = (
        await client.post(
            "/login", json={"email": user["email"], "password": PASSWORD, "resource": orders}
        )
    ).json()["access_token"]

    async with authlib_client(client, client_id=client_id, client_secret=secret) as oauth:
        own = await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials", resource=orders)
        exchanged = await oauth.fetch_token(
            TOKEN_URL,
            grant_type=EXCHANGE,
            subject_token=subject,
            subject_token_type=ACCESS_TOKEN_TYPE,
            resource=billing,
        )

    assert claims_of(own["access_token"])["aud"] == orders
    assert exchanged["issued_token_type"] == ACCESS_TOKEN_TYPE
    claims = claims_of(exchanged["access_token"])
    assert (claims["aud"], claims["sub"], claims["act"]) == (
        billing,
        user["id"],
        {"sub": client_id},
    )


async def test_pyjwt_verifies_an_audience_restricted_token_against_the_jwks(
    make_settings: Any, clock: FakeClock, serve: Serve, db: asyncpg.Connection
) -> None:
    """PyJWT, given the published JWKS, accepts the token for its own audience only."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = make_settings(access_token_signing_key=Secret(pem))
    orders = "https://orders.example/"
    await db.execute(
        "INSERT INTO resources (uri, name, scopes) VALUES ($1, 'orders', '{}')", orders
    )
    async with serve(settings, clock) as service:
        email = f"pyjwt-{uuid.uuid4().hex[:8]}@example.com"
        await service.post("/register", json={"email": email, "password": PASSWORD})
        token = (
            await service.post(
                "/login", json={"email": email, "password": PASSWORD, "resource": orders}
            )
        ).json()["access_token"]
        key_set = (await service.get("/.well-known/jwks.json")).json()

    verifying_key = jwt.PyJWKSet.from_dict(key_set)[jwt.get_unverified_header(token)["kid"]]
    verified = jwt.decode(
        token,
        verifying_key.key,
        algorithms=["ES256"],
        audience=orders,
        issuer=settings.token_issuer,
        options={"require": ["exp", "iat", "sub", "aud"]},
    )
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(
            token,
            verifying_key.key,
            algorithms=["ES256"],
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )
    assert verified["aud"] == orders
