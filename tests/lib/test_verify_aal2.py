"""`requires_aal2`: a resource server demands a second factor, and a recent one, with RFC
9470's challenge; the service's step-up answers it."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.verify import TokenVerifier, protect, requires_aal2
from tokenrota_server.config import Settings
from tokenrota_server.db.sessions import Strength
from tokenrota_server.tokens import TokenCodec

from tests.support import FakeClock

CHALLENGE = (
    'Bearer error="insufficient_user_authentication", error_description="A stronger or more'
    ' recent authentication is required.", acr_values="aal2"'
)


def api(settings: Settings, clock: FakeClock) -> httpx.AsyncClient:
    """/payout needs aal2 within 300 s, /report aal2 at any age, /plain any valid token."""

    async def ok(request: Request) -> Response:
        return JSONResponse({"ok": True})

    verifier = TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        secret=str(settings.access_token_secret),
        clock=clock,
    )
    app = Starlette(
        routes=[
            Route("/payout", requires_aal2(max_age=300, clock=clock)(ok)),
            Route("/report", requires_aal2()(ok)),
            Route("/plain", ok),
            Route("/open", requires_aal2()(ok)),
        ],
        middleware=[protect(verifier, public=["/open"])],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def token(settings: Settings, clock: FakeClock, strength: Strength | None) -> str:
    minted, _ = TokenCodec(settings).mint_access(
        subject="u1",
        session_id="s1",
        email="u1@example.com",
        now=clock.now,
        strength=strength,
    )
    return minted


async def get(client: httpx.AsyncClient, path: str, access: str) -> httpx.Response:
    return await client.get(path, headers={"Authorization": f"Bearer {access}"})


async def test_an_aal1_token_gets_rfc_9470s_challenge(settings: Settings, clock: FakeClock) -> None:
    aal1 = token(settings, clock, Strength(("pwd",), "aal1", clock.now))
    async with api(settings, clock) as client:
        payout = await get(client, "/payout", aal1)
        report = await get(client, "/report", aal1)
        plain = await get(client, "/plain", aal1)

    assert payout.status_code == 401
    assert payout.json()["error"] == "insufficient_user_authentication"
    assert payout.headers["www-authenticate"] == CHALLENGE + ", max_age=300"
    assert report.headers["www-authenticate"] == CHALLENGE
    assert plain.status_code == 200


async def test_an_aal2_token_passes_while_recent(settings: Settings, clock: FakeClock) -> None:
    """auth_time 300 s ago passes max_age=300; 301 s ago does not; no max_age, any age."""
    recent = token(settings, clock, Strength(("pwd", "otp", "mfa"), "aal2", clock.now))
    stale = token(
        settings,
        clock,
        Strength(("pwd", "otp", "mfa"), "aal2", clock.now - timedelta(seconds=1)),
    )
    clock.advance(300)
    async with api(settings, clock) as client:
        assert (await get(client, "/payout", recent)).status_code == 200
        refused = await get(client, "/payout", stale)
        assert (await get(client, "/report", stale)).status_code == 200

    assert refused.status_code == 401
    assert "max_age=300" in refused.headers["www-authenticate"]


async def test_a_token_without_the_claims_is_refused(settings: Settings, clock: FakeClock) -> None:
    """Minted before the claims existed (no acr): treated as not aal2, never as a pass."""
    bare = token(settings, clock, None)
    async with api(settings, clock) as client:
        response = await get(client, "/report", bare)
        anonymous = await client.get("/open")

    assert response.status_code == 401
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "missing_token"


def test_a_negative_max_age_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_age"):
        requires_aal2(max_age=-1)
