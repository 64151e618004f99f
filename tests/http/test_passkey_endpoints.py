"""The passkey endpoints at the HTTP edge: registering (bearer, one challenge per ceremony,
bad input written nowhere), and the request options."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from jose import jwt
from tokenrota_server.config import Settings

from tests import support
from tests.checks import assert_error
from tests.passkey_support import SoftAuthenticator
from tests.passkey_support import b64url as support_b64


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with the software authenticator's page as the passkey origin."""
    return replace(settings, webauthn_origins=("http://localhost:8000",))


async def bearer(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    user, pair = await support.register_and_login(client)
    return user, {"Authorization": f"Bearer {pair['access_token']}"}


async def passkey_login(
    client: httpx.AsyncClient, authenticator: SoftAuthenticator, **forgery: Any
) -> dict[str, Any]:
    """Sign in with the passkey alone; the token pair."""
    options = (await client.post("/passkeys/login/options")).json()
    response = await client.post(
        "/passkeys/login", json={"credential": authenticator.get(options, **forgery)}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def creation_options(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/passkeys/register/options", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    options: dict[str, Any] = response.json()
    return options


async def passkey_rows(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT f.id, f.name, c.sign_count FROM mfa_factors f"
        " JOIN passkey_credentials c ON c.factor_id = f.id ORDER BY f.created_at"
    )
    return [tuple(row) for row in rows]


async def test_creation_options_name_the_rp_and_an_opaque_user_handle(
    client: httpx.AsyncClient,
) -> None:
    """The RP is WEBAUTHN_RP_ID; the user handle is the user's id, never the email; a resident
    key is required. Once a factor exists, more options need an aal2 login, and exclude the
    user's passkeys."""
    user, headers = await bearer(client)
    options = await creation_options(client, headers)
    authenticator = SoftAuthenticator()
    await client.post(
        "/passkeys/register", headers=headers, json={"credential": authenticator.create(options)}
    )

    at_aal1 = await client.post("/passkeys/register/options", headers=headers)
    alone = await passkey_login(client, authenticator)
    again = await creation_options(client, {"Authorization": f"Bearer {alone['access_token']}"})

    assert options["rp"]["id"] == "localhost"
    assert user["email"] not in options["user"]["id"]
    assert authenticator.user_handle is not None
    assert authenticator.user_handle.hex() == user["id"].replace("-", "")
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert at_aal1.status_code == 401
    assert at_aal1.json()["error"] == "insufficient_user_authentication"
    assert [c["id"] for c in again["excludeCredentials"]] == [
        support_b64(authenticator.credential_id)
    ]


async def test_a_passkey_registers_once_under_its_name(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """201 with the factor and, as the first factor, the recovery codes; its creation response
    again (the challenge spent), even at aal2, is refused."""
    _, headers = await bearer(client)
    authenticator = SoftAuthenticator()
    credential = authenticator.create(await creation_options(client, headers))

    first = await client.post(
        "/passkeys/register", headers=headers, json={"credential": credential, "name": "laptop"}
    )
    strong = await passkey_login(client, authenticator)
    replayed = await client.post(
        "/passkeys/register",
        headers={"Authorization": f"Bearer {strong['access_token']}"},
        json={"credential": credential, "name": "again"},
    )

    assert first.status_code == 201, first.text
    assert first.json()["factor"]["type"] == "passkey"
    assert first.json()["factor"]["name"] == "laptop"
    assert len(first.json()["recovery_codes"]) == 10
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_passkey"
    assert [row[1] for row in await passkey_rows(db)] == ["laptop"]


async def test_a_challenge_issued_to_another_user_registers_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A creation response for Alice's challenge, sent with Bob's token, is refused."""
    _, alice = await bearer(client)
    _, bob = await bearer(client)
    credential = SoftAuthenticator().create(await creation_options(client, alice))

    response = await client.post("/passkeys/register", headers=bob, json={"credential": credential})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_passkey"
    assert await passkey_rows(db) == []


@pytest.mark.parametrize(
    ("forgery", "status"),
    [({"origin": "https://evil.example"}, 400), ({"rp_id": "evil.example"}, 400)],
)
async def test_a_creation_response_for_another_origin_or_rp_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, forgery: dict[str, str], status: int
) -> None:
    _, headers = await bearer(client)
    credential = SoftAuthenticator().create(await creation_options(client, headers), **forgery)

    response = await client.post(
        "/passkeys/register", headers=headers, json={"credential": credential}
    )

    assert response.status_code == status
    assert response.json()["error"] == "invalid_passkey"
    assert await passkey_rows(db) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "invalid_input"),
        ({"credential": "not an object"}, 422, "invalid_input"),
        ({"credential": {}}, 400, "invalid_passkey"),
        (
            {"credential": {"id": "x", "rawId": "!!", "type": "public-key", "response": {}}},
            400,
            "invalid_passkey",
        ),
        ({"credential": None, "name": "x"}, 422, "invalid_input"),
        ("NAME", 422, "invalid_input"),
    ],
)
async def test_bad_registration_bodies_write_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    body: Any,
    status: int,
    code: str,
) -> None:
    """A missing or malformed credential, or a bad name (empty, too long, a control
    character): a clear error, and no factor."""
    _, headers = await bearer(client)
    options = await creation_options(client, headers)
    if body == "NAME":
        for name in ("", "x" * 65, "a\u0000b", "tab\there", 7):
            credential = SoftAuthenticator().create(options)
            response = await client.post(
                "/passkeys/register", headers=headers, json={"credential": credential, "name": name}
            )
            assert response.status_code == status, (name, response.text)
            assert response.json()["error"] == code
    else:
        response = await client.post("/passkeys/register", headers=headers, json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"] == code

    assert await passkey_rows(db) == []


async def test_registering_needs_a_bearer_token(client: httpx.AsyncClient) -> None:
    for path in ("/passkeys/register/options", "/passkeys/register"):
        response = await client.post(path, json={})
        assert response.status_code == 401
        assert response.json()["error"] == "missing_token"


async def test_request_options_never_tell_whether_an_email_has_passkeys(
    client: httpx.AsyncClient,
) -> None:
    """With or without `email`, known or not, the same answer: an empty allowCredentials (any
    discoverable passkey), so the endpoint tells no one which emails have an account."""
    user, headers = await bearer(client)
    authenticator = SoftAuthenticator()
    credential = authenticator.create(await creation_options(client, headers))
    await client.post("/passkeys/register", headers=headers, json={"credential": credential})

    named = await client.post("/passkeys/login/options", json={"email": user["email"].upper()})
    unknown = await client.post("/passkeys/login/options", json={"email": "nobody@example.com"})
    anyone = await client.post("/passkeys/login/options")
    bad = await client.post("/passkeys/login/options", json={"email": 7})

    answers = [named.json(), unknown.json(), anyone.json()]
    assert [answer["allowCredentials"] for answer in answers] == [[], [], []]
    assert {tuple(sorted(answer)) for answer in answers} == {tuple(sorted(anyone.json()))}
    assert anyone.json()["rpId"] == "localhost"
    assert len({answer["challenge"] for answer in answers}) == 3
    assert bad.status_code == 422


async def test_request_options_are_throttled_per_address(
    settings: Settings, clock: support.FakeClock, db: asyncpg.Connection
) -> None:
    """Each request writes a challenge: past PASSKEY_OPTIONS_IP_MAX_ATTEMPTS from one address
    in the window, 429 too_many_attempts with Retry-After, and no challenge written; another
    address still gets its options, and the next window the first does again."""
    limited = replace(
        settings,
        passkey_options_ip_max_attempts=3,
        login_throttle_window=600,
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
    )

    async def options_for(client: httpx.AsyncClient, address: str) -> httpx.Response:
        return await client.post("/passkeys/login/options", headers={"X-Forwarded-For": address})

    async with support.serve(limited, clock) as client:
        allowed = [await options_for(client, "203.0.113.1") for _ in range(3)]
        clock.advance(60)
        challenges = await db.fetchval("SELECT count(*) FROM webauthn_challenges")
        refused = await options_for(client, "203.0.113.1")
        refused_again = await options_for(client, "203.0.113.1")
        written = await db.fetchval("SELECT count(*) FROM webauthn_challenges") - challenges
        other = await options_for(client, "203.0.113.2")
        clock.advance(540)
        next_window = await options_for(client, "203.0.113.1")

    assert [response.status_code for response in allowed] == [200] * 3
    for response in (refused, refused_again):
        assert_error(response, 429, "too_many_attempts")
        assert response.headers["retry-after"] == "540"
        assert "challenge" not in response.json()
    assert written == 0
    assert other.status_code == 200
    assert next_window.status_code == 200


def claims_of(pair: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.get_unverified_claims(str(pair["access_token"]))
    return claims


async def registered(client: httpx.AsyncClient) -> tuple[dict[str, Any], SoftAuthenticator]:
    """A user whose one factor is a passkey."""
    user, headers = await bearer(client)
    authenticator = SoftAuthenticator()
    credential = authenticator.create(await creation_options(client, headers))
    response = await client.post(
        "/passkeys/register", headers=headers, json={"credential": credential}
    )
    assert response.status_code == 201, response.text
    return user, authenticator


async def test_a_passkey_alone_signs_in_at_aal2(client: httpx.AsyncClient, clock: Any) -> None:
    """A token pair whose access token says hwk and user, aal2, and when; the cookie transport
    as at /login."""
    user, authenticator = await registered(client)

    pair = await passkey_login(client, authenticator)
    options = (await client.post("/passkeys/login/options")).json()
    in_cookie = await client.post(
        "/passkeys/login", json={"credential": authenticator.get(options), "use_cookie": True}
    )

    claims = claims_of(pair)
    assert claims["sub"] == user["id"]
    assert claims["amr"] == ["hwk", "user"]
    assert claims["acr"] == "aal2"
    assert claims["auth_time"] == int(clock().timestamp())
    assert in_cookie.status_code == 200
    assert "refresh_token" not in in_cookie.json()
    assert "refresh_token" in in_cookie.headers["set-cookie"]


async def test_a_passkey_alone_without_user_verification_starts_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Presence alone is not enough without a password: 400, no session, the reason audited."""
    _, authenticator = await registered(client)
    sessions_before = await db.fetchval("SELECT count(*) FROM sessions")
    options = (await client.post("/passkeys/login/options")).json()

    response = await client.post(
        "/passkeys/login",
        json={"credential": authenticator.get(options, user_verified=False)},
    )

    assert_error(response, 400, "invalid_passkey")
    assert await db.fetchval("SELECT count(*) FROM sessions") == sessions_before
    assert (
        await db.fetchval(
            "SELECT details->>'reason' FROM audit_events WHERE action = 'passkey_refused'"
        )
        == "user_verification"
    )


async def test_a_passkey_completes_a_password_login(client: httpx.AsyncClient) -> None:
    """/login answers mfa_required with the passkey among the factors; /login/mfa with its
    assertion answers a pair at aal2 whose amr has pwd, hwk and mfa."""
    user, authenticator = await registered(client)
    started = await client.post(
        "/login", json={"email": user["email"], "password": support.PASSWORD}
    )
    options = (await client.post("/passkeys/login/options")).json()

    response = await client.post(
        "/login/mfa",
        json={
            "mfa_token": started.json()["mfa_token"],
            "credential": authenticator.get(options, user_verified=False),
        },
    )

    assert started.json()["factors"][0]["type"] == "passkey"
    assert response.status_code == 200, response.text
    assert claims_of(response.json())["amr"] == ["pwd", "hwk", "mfa"]
    assert claims_of(response.json())["acr"] == "aal2"


async def test_another_users_passkey_completes_nobody_s_login(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Bob's valid passkey at Alice's second step: refused, audited (other_user), and the
    mfa_token still unspent."""
    alice, _ = await registered(client)
    _, bobs = await registered(client)
    started = await client.post(
        "/login", json={"email": alice["email"], "password": support.PASSWORD}
    )
    options = (await client.post("/passkeys/login/options")).json()

    response = await client.post(
        "/login/mfa",
        json={"mfa_token": started.json()["mfa_token"], "credential": bobs.get(options)},
    )

    assert_error(response, 400, "invalid_passkey")
    assert (
        await db.fetchval(
            "SELECT details->>'reason' FROM audit_events WHERE action = 'passkey_refused'"
        )
        == "other_user"
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'mfa_failed' AND user_id = $1",
            uuid.UUID(alice["id"]),
        )
        == 1
    )
    assert await db.fetchval("SELECT count(*) FROM mfa_tokens WHERE used_at IS NULL") == 1


async def test_a_passkey_steps_a_session_up(client: httpx.AsyncClient) -> None:
    """/mfa/challenge with an assertion: a new pair for the same session, at aal2."""
    _, headers = await bearer(client)
    authenticator = SoftAuthenticator()
    credential = authenticator.create(await creation_options(client, headers))
    await client.post("/passkeys/register", headers=headers, json={"credential": credential})
    options = (await client.post("/passkeys/login/options")).json()

    response = await client.post(
        "/mfa/challenge", headers=headers, json={"credential": authenticator.get(options)}
    )

    assert response.status_code == 200, response.text
    before = jwt.get_unverified_claims(headers["Authorization"].removeprefix("Bearer "))
    after = claims_of(response.json())
    assert after["sid"] == before["sid"]
    assert after["acr"] == "aal2"
    assert after["amr"] == ["pwd", "hwk", "mfa", "user"]


async def test_a_disabled_users_passkey_opens_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Once the user is disabled, their passkey is refused like an unknown one."""
    user, authenticator = await registered(client)
    await db.execute("UPDATE users SET disabled_at = now() WHERE id = $1", uuid.UUID(user["id"]))
    options = (await client.post("/passkeys/login/options")).json()

    response = await client.post("/passkeys/login", json={"credential": authenticator.get(options)})

    assert_error(response, 400, "invalid_passkey")
