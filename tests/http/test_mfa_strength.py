"""How strong a login was, in its tokens: amr, acr and auth_time through login, refresh, the
cookie transport and the step-up; a refresh never raises them."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
from jose import jwt
from tokenrota_server import totp

from tests.checks import assert_error
from tests.mfa_support import bearer, enrol_totp, mfa_login, start_login, totp_user
from tests.support import FakeClock, login, register


def claims_of(pair: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.get_unverified_claims(pair["access_token"])
    return claims


def strength(pair: dict[str, Any]) -> tuple[list[str], str, int]:
    claims = claims_of(pair)
    return claims["amr"], claims["acr"], claims["auth_time"]


async def refresh(client: httpx.AsyncClient, pair: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_password_login_is_aal1_and_a_refresh_keeps_it(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    user = await register(client)
    pair = await login(client, user["email"])
    logged_in_at = int(clock.now.timestamp())
    clock.advance(60)

    refreshed = await refresh(client, pair)

    assert strength(pair) == (["pwd"], "aal1", logged_in_at)
    assert strength(refreshed) == (["pwd"], "aal1", logged_in_at)


async def test_a_refresh_keeps_aal2_and_the_time_of_the_second_factor(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    who = await totp_user(client, clock)
    pair = await mfa_login(client, clock, who)
    clock.advance(120)

    refreshed = await refresh(client, pair)

    assert strength(refreshed) == strength(pair)
    assert strength(pair)[1] == "aal2"


async def test_a_refresh_cannot_raise_the_level(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """A session that began at aal1 stays aal1 through refreshes, even once the user has a
    factor: the level comes from the session, which only a step-up raises."""
    user = await register(client)
    pair = await login(client, user["email"])
    await enrol_totp(client, clock, pair)

    refreshed = await refresh(client, pair)

    assert strength(refreshed)[:2] == (["pwd"], "aal1")
    assert await db.fetchval("SELECT acr FROM sessions") == "aal1"


async def test_the_step_up_raises_the_same_session_to_aal2(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """POST /mfa/challenge with a code: a new pair for the same session, at aal2, auth_time
    now; its refresh token, and the session's older one, now mint aal2 tokens."""
    user = await register(client)
    pair = await login(client, user["email"])
    _, secret, _ = await enrol_totp(client, clock, pair)

    response = await client.post(
        "/mfa/challenge",
        json={"code": totp.code_at(secret, totp.step_of(clock.now))},
        headers=bearer(pair),
    )

    assert response.status_code == 200, response.text
    raised = response.json()
    assert claims_of(raised)["sid"] == claims_of(pair)["sid"]
    assert strength(raised) == (["pwd", "otp", "mfa"], "aal2", int(clock.now.timestamp()))
    assert strength(await refresh(client, raised))[1] == "aal2"
    assert strength(await refresh(client, pair))[1] == "aal2"


async def test_a_wrong_code_at_the_step_up_changes_nothing(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    user = await register(client)
    pair = await login(client, user["email"])
    await enrol_totp(client, clock, pair)
    before = await db.fetch("SELECT * FROM sessions")

    response = await client.post("/mfa/challenge", json={"code": "000000"}, headers=bearer(pair))

    assert_error(response, 401, "invalid_code")
    assert await db.fetch("SELECT * FROM sessions") == before


async def test_the_cookie_transport_carries_the_strength(
    make_settings: Any, clock: FakeClock, serve: Any
) -> None:
    """/login/mfa with use_cookie, then /refresh from the cookie: still aal2; and a step-up with
    use_cookie puts the new refresh token in the cookie."""
    app = "https://app.example"
    async with serve(make_settings(allowed_origins=(app,)), clock) as client:
        who = await totp_user(client, clock)
        started = await start_login(client, who.email)
        done = await client.post(
            "/login/mfa",
            json={"mfa_token": started["mfa_token"], "code": who.code(clock), "use_cookie": True},
        )
        assert done.status_code == 200
        cookie = done.headers["set-cookie"].partition(";")[0]
        client.cookies.clear()

        refreshed = await client.post(
            "/refresh", headers={"Origin": app, "X-Requested-With": "fetch", "Cookie": cookie}
        )

        assert refreshed.status_code == 200, refreshed.text
        assert "refresh_token" not in refreshed.json()
        assert strength(refreshed.json())[:2] == (["pwd", "otp", "mfa"], "aal2")
