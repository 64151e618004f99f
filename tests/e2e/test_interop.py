"""A third-party OAuth 2.0 client (Authlib's httpx integration) against the running service."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import asyncpg
import httpx
import pytest
import requests
from requests_oauth2client import OAuth2Client
from tokenrota_server.config import Settings

from tests.lib.test_httpx_dpop import served_on_a_socket
from tests.oauth_support import claims_of
from tests.support import CreateClient, FakeClock, RegisterAndLogin, Serve

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


async def test_requests_oauth2client_dpop_with_nonces_end_to_end(
    settings: Settings, clock: FakeClock, db: asyncpg.Connection, create_client: CreateClient
) -> None:
    """requests-oauth2client's own DPoP support (its key, its proofs, its nonce handling) over a
    real socket: the service binds the token to its key after asking for a nonce, and the
    verifier takes the token with its proofs, nonce included."""
    with served_on_a_socket(settings, clock) as (base_url, served):
        credentials = await create_client(db, served, scope="read")

        def use() -> tuple[Any, requests.Response]:
            oauth = OAuth2Client(
                f"{base_url}/oauth/token",
                auth=credentials,
                dpop_bound_access_tokens=True,
                testing=True,  # plain http on the loopback
            )
            token = oauth.client_credentials()
            return token, requests.get(f"{base_url}/api/data", auth=token, timeout=30)

        token, response = await asyncio.to_thread(use)

    assert token.token_type == "DPoP"
    assert claims_of(token.access_token)["cnf"] == {"jkt": token.dpop_key.private_key.thumbprint()}
    assert response.json() == {"sub": credentials[0]}
