"""/login for a user with a second factor: 403 mfa_required, then /login/mfa with a code."""

from __future__ import annotations

import asyncpg
import httpx
from jose import jwt
from tokenrota.dpop import thumbprint
from tokenrota_server.config import Settings
from tokenrota_server.db.purge import delete_expired_batch

from tests.checks import assert_error
from tests.dpop_support import Signer, stamp
from tests.mfa_support import bearer, mfa_login, start_login, totp_user
from tests.support import FakeClock, TableSnapshot, login, register


def claims_of(pair: dict[str, object]) -> dict[str, object]:
    """The access token's claims, unverified (the service checked them)."""
    claims: dict[str, object] = jwt.get_unverified_claims(str(pair["access_token"]))
    return claims


async def test_a_password_alone_is_not_enough_once_a_factor_is_live(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """403 mfa_required with an mfa_token and the factors; no session is started."""
    who = await totp_user(client, clock)
    sessions_before = await db.fetchval("SELECT count(*) FROM sessions")

    body = await start_login(client, who.email)

    assert set(body) == {"error", "error_description", "mfa_token", "factors"}
    assert body["factors"] == [{"id": who.factor_id, "type": "totp"}]
    assert await db.fetchval("SELECT count(*) FROM sessions") == sessions_before


async def test_a_pending_factor_does_not_count(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Enrolled but never verified: the password alone still logs in."""
    user = await register(client)
    pair = await login(client, user["email"])
    started = await client.post("/mfa/totp", json={}, headers=bearer(pair))
    assert started.status_code == 201

    await login(client, user["email"])


async def test_the_code_completes_the_login_at_aal2(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """The pair's access token says how: pwd and otp (mfa), aal2, auth_time now."""
    who = await totp_user(client, clock)

    pair = await mfa_login(client, clock, who)

    claims = claims_of(pair)
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == "aal2"
    assert claims["auth_time"] == int(clock.now.timestamp())
    profile = await client.get("/profile", headers=bearer(pair))
    assert profile.status_code == 200


async def test_a_recovery_code_completes_the_login_once(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Typed in any case, with or without its hyphen; the second use is refused."""
    who = await totp_user(client, clock)
    code = who.recovery_codes[0]
    first = await start_login(client, who.email)
    second = await start_login(client, who.email)

    used = await client.post(
        "/login/mfa",
        json={"mfa_token": first["mfa_token"], "recovery_code": code.upper().replace("-", "")},
    )
    again = await client.post(
        "/login/mfa", json={"mfa_token": second["mfa_token"], "recovery_code": code}
    )

    assert used.status_code == 200, used.text
    assert_error(again, 401, "invalid_code")


async def test_the_mfa_token_is_good_once(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """After a completed login, the same mfa_token is refused, even with a fresh code."""
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)
    done = await client.post(
        "/login/mfa", json={"mfa_token": started["mfa_token"], "code": who.code(clock)}
    )
    assert done.status_code == 200
    clock.advance(30)

    again = await client.post(
        "/login/mfa", json={"mfa_token": started["mfa_token"], "code": who.code(clock)}
    )

    assert_error(again, 401, "invalid_token")


async def test_the_mfa_token_expires(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Past MFA_TOKEN_TTL (5 minutes) the right code no longer completes it."""
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)
    clock.advance(300)

    late = await client.post(
        "/login/mfa", json={"mfa_token": started["mfa_token"], "code": who.code(clock)}
    )

    assert_error(late, 401, "invalid_token")


async def test_the_mfa_token_opens_nothing_else(
    client: httpx.AsyncClient,
    clock: FakeClock,
    db: asyncpg.Connection,
    table_snapshot: TableSnapshot,
) -> None:
    """Not a bearer token, not a refresh token: refused at /profile, /mfa/* and /refresh."""
    who = await totp_user(client, clock)
    mfa_token = (await start_login(client, who.email))["mfa_token"]
    before = await table_snapshot(db)

    as_bearer = await client.get("/profile", headers={"Authorization": f"Bearer {mfa_token}"})
    at_factors = await client.get("/mfa/factors", headers={"Authorization": f"Bearer {mfa_token}"})
    at_refresh = await client.post("/refresh", json={"refresh_token": mfa_token})

    assert_error(as_bearer, 403, "invalid_token")
    assert_error(at_factors, 403, "invalid_token")
    assert_error(at_refresh, 403, "invalid_token")
    assert await table_snapshot(db) == before


async def test_a_replayed_code_is_refused(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """A code accepted once is refused within its window, on a new mfa_token too."""
    who = await totp_user(client, clock)
    code = who.code(clock)
    first = await start_login(client, who.email)
    second = await start_login(client, who.email)
    accepted = await client.post("/login/mfa", json={"mfa_token": first["mfa_token"], "code": code})
    assert accepted.status_code == 200

    replayed = await client.post(
        "/login/mfa", json={"mfa_token": second["mfa_token"], "code": code}
    )

    assert_error(replayed, 401, "invalid_code")


async def test_one_step_of_drift_each_way_passes_two_fail(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """RFC 6238's drift window: ±1 step accepted, ±2 refused."""
    who = await totp_user(client, clock)
    clock.advance(30)  # the step before now was the enrolment's: not a drift, a replay
    answers = {}
    for steps in (-2, 2, -1, 1):
        # Each accepted code moves the factor's last step on: try the later ones last.
        started = await start_login(client, who.email)
        response = await client.post(
            "/login/mfa", json={"mfa_token": started["mfa_token"], "code": who.code(clock, steps)}
        )
        answers[steps] = response.status_code

    assert answers == {-2: 401, 2: 401, -1: 200, 1: 200}


async def test_a_credential_that_is_no_passkey_assertion_is_refused(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """`credential` is a passkey's assertion: an empty object is refused (400 invalid_passkey),
    a string is no object (422)."""
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)

    empty = await client.post(
        "/login/mfa", json={"mfa_token": started["mfa_token"], "credential": {}}
    )
    text = await client.post(
        "/login/mfa", json={"mfa_token": started["mfa_token"], "credential": "x"}
    )

    assert_error(empty, 400, "invalid_passkey")
    assert_error(text, 422, "invalid_input")


async def test_the_cookie_transport_works_the_same(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """With use_cookie the refresh token goes into the cookie, as at /login."""
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)

    response = await client.post(
        "/login/mfa",
        json={"mfa_token": started["mfa_token"], "code": who.code(clock), "use_cookie": True},
    )

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert "refresh_token" in response.headers["set-cookie"]


async def test_a_dpop_proof_at_login_mfa_binds_the_session(
    client: httpx.AsyncClient, clock: FakeClock, settings: Settings
) -> None:
    """As at /login: the pair is DPoP, its tokens name the key, and a refresh needs its proof."""
    signer = Signer("ES256")
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)
    htu = f"{settings.public_base_url}/login/mfa"

    response = await client.post(
        "/login/mfa",
        json={"mfa_token": started["mfa_token"], "code": who.code(clock)},
        headers={"DPoP": signer.proof(htu=htu, iat=stamp(clock.now))},
    )

    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair["token_type"] == "DPoP"
    assert claims_of(pair)["cnf"] == {"jkt": thumbprint(signer.jwk)}
    unproven = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_error(unproven, 403, "invalid_token")


async def test_the_purge_forgets_expired_mfa_tokens_and_abandoned_enrolments(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    who = await totp_user(client, clock)
    await start_login(client, who.email)
    user = await register(client)
    pair = await login(client, user["email"])
    await client.post("/mfa/totp", json={}, headers=bearer(pair))
    clock.advance(2 * 24 * 3600)

    batch = await delete_expired_batch(
        db, now=clock.now, throttle_window=900, batch_size=100, leeway=30
    )

    assert (batch.mfa_tokens, batch.pending_factors) == (1, 1)
    assert await db.fetchval("SELECT count(*) FROM mfa_factors") == 1, "the live one stays"
