"""The orders API's own tests: a real token service from the `token_service` fixture.

Nothing here is specific to this repository: a project that installs `tokenrota[testing]`
writes exactly these tests.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from orders_api import create_app
from starlette.datastructures import Secret
from tokenrota.clock import utc_now
from tokenrota.testing import TokenService, VerifierSettings
from tokenrota.verify import TokenVerifier
from tokenrota_server.tokens import TokenCodec

# The orders API's own URI: the audience it accepts.
ORDERS = "https://orders.example"


@pytest.fixture
def token_service_settings() -> dict[str, object]:
    """The service mints its tokens for the orders API."""
    return {"token_audience": ORDERS}


def verifier_for(published: VerifierSettings) -> TokenVerifier:
    """A verifier with what the service publishes for resource servers (HS256 here)."""
    assert published.access_token_secret is not None, "this example verifies HS256 tokens"
    return TokenVerifier(
        issuer=published.issuer,
        audience=ORDERS,
        secret=str(published.access_token_secret),
        leeway=published.leeway,
        max_lifetime=published.max_lifetime,
    )


@pytest.fixture
async def orders(token_service: TokenService) -> AsyncIterator[httpx.AsyncClient]:
    """The orders API, configured with the running token service's verifier settings."""
    app = create_app(verifier_for(token_service.verifier_settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_logged_in_user_sees_their_orders(
    token_service: TokenService, orders: httpx.AsyncClient
) -> None:
    """A token from the real /login works at the resource server without calling the service."""
    user = await token_service.create_user()
    pair = await token_service.login(user.email, user.password)

    response = await orders.get("/orders", headers=bearer(pair.access_token))

    assert response.status_code == 200
    assert response.json() == {"user_id": user.id, "orders": []}


async def test_a_service_with_the_write_scope_places_an_order(
    token_service: TokenService, orders: httpx.AsyncClient
) -> None:
    """A client token with orders:write places an order that the user then sees."""
    user = await token_service.create_user()
    pair = await token_service.login(user.email, user.password)
    client = await token_service.create_client(["orders:write"])
    service_token = token_service.issue_access_token(
        client.client_id, client_id=client.client_id, scope="orders:write"
    )

    placed = await orders.post(
        "/orders", json={"user_id": user.id, "item": "tea"}, headers=bearer(service_token)
    )
    listed = await orders.get("/orders", headers=bearer(pair.access_token))

    assert placed.status_code == 201
    assert listed.json()["orders"] == [{"item": "tea", "placed_by": client.client_id}]


async def test_a_token_without_the_scope_is_forbidden(
    token_service: TokenService, orders: httpx.AsyncClient
) -> None:
    """A valid token lacking orders:write gets 403 insufficient_scope, and nothing is placed."""
    token = token_service.issue_access_token("user-1", scope="orders:read")

    response = await orders.post(
        "/orders", json={"user_id": "user-1", "item": "tea"}, headers=bearer(token)
    )
    listed = await orders.get("/orders", headers=bearer(token))

    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert listed.json()["orders"] == []


async def test_only_the_health_check_is_public(orders: httpx.AsyncClient) -> None:
    """protect() fails closed: /healthz is listed as public, the rest needs a token."""
    health = await orders.get("/healthz")
    listed = await orders.get("/orders")

    assert health.status_code == 200
    assert listed.status_code == 401


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("missing", 401, "missing_token"),
        ("expired", 403, "token_expired"),
        ("garbage", 403, "invalid_token"),
        ("refresh token", 403, "invalid_token"),
        ("other instance", 403, "invalid_token"),
        ("another API's", 403, "invalid_token"),
    ],
)
async def test_bad_tokens_are_refused_as_the_service_refuses_them(
    token_service: TokenService, orders: httpx.AsyncClient, case: str, status: int, error: str
) -> None:
    """No token is 401; an expired one 403 token_expired (a client refreshes); a refresh token
    or one signed by another instance or minted for another API 403 invalid_token. Always with a
    Bearer challenge."""
    user = await token_service.create_user()
    pair = await token_service.login(user.email, user.password)
    stranger = TokenCodec(
        replace(token_service.settings, access_token_secret=Secret(secrets.token_urlsafe(48)))
    )
    tokens = {
        "expired": token_service.issue_access_token(
            user.id, expires_in=60, now=utc_now() - timedelta(minutes=5)
        ),
        "garbage": "not.a.token",
        "another API's": token_service.issue_access_token(
            user.id, audience="https://billing.example"
        ),
        "refresh token": pair.refresh_token,
        "other instance": stranger.mint_access(
            subject=user.id, session_id=str(uuid.uuid4()), email=user.email, now=utc_now()
        )[0],
    }
    headers = bearer(tokens[case]) if case in tokens else {}

    response = await orders.get("/orders", headers=headers)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
