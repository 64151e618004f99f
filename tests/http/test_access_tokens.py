"""Bearer tokens at GET /profile: every forged, misused or stale token, end to end.

The answer is 401 missing_token (with `WWW-Authenticate: Bearer`) when there is no bearer token,
and otherwise 403 invalid_token — one body for every reason — or token_expired; never a 500,
never the token or a secret echoed back.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests import forge
from tests.checks import assert_error, settings_secrets
from tests.forge import REFRESH_HEADER, REMOVE
from tests.support import FakeClock, RegisterAndLogin, Serve


async def profile(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/profile", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def victim(
    client: httpx.AsyncClient, db: asyncpg.Connection, register_and_login: RegisterAndLogin
) -> dict[str, Any]:
    """A user with a live session: its ids let forged tokens point at real rows."""
    user, pair = await register_and_login(client)
    session_id = await db.fetchval("SELECT id::text FROM sessions")
    return {**user, **pair, "session_id": session_id}


def forged(settings: Settings, clock: FakeClock, victim: dict[str, Any], **changes: Any) -> str:
    """An access token for the victim's session under the real secret, with `changes`."""
    claims = forge.access_claims(
        settings,
        int(clock.now.timestamp()),
        sub=victim["id"],
        sid=victim["session_id"],
        email=victim["email"],
    )
    claims = forge.apply_changes(claims, changes)
    return forge.token(claims, forge.access_secret(settings))


def attacks(settings: Settings, clock: FakeClock, victim: dict[str, Any]) -> dict[str, str]:
    """Tokens that must all be refused alike, each one change away from a valid one."""
    now = int(clock.now.timestamp())
    valid = forged(settings, clock, victim)
    header, payload, signature = valid.split(".")
    claims = forge.decode_segment(payload)
    access_key = forge.access_secret(settings)

    def with_header(**fields: Any) -> str:
        return forge.token(claims, access_key, header={"alg": "HS256", "typ": "at+jwt", **fields})

    other = forge.access_claims(settings, now, sid=victim["session_id"], email=victim["email"])
    tampered = forge.b64(forge.encode_json({**claims, "sub": other["sub"]}))
    result = {
        "alg-none": f"{forge.b64(forge.encode_json({'alg': 'none', 'typ': 'at+jwt'}))}.{payload}.",
        "alg-none-signed": with_header(alg="none"),
        "alg-None": with_header(alg="None"),
        "alg-NONE": with_header(alg="NONE"),
        "alg-HS384": forge.token(
            claims, access_key, header={"alg": "HS384", "typ": "at+jwt"}, alg="HS384"
        ),
        "alg-HS512": forge.token(
            claims, access_key, header={"alg": "HS512", "typ": "at+jwt"}, alg="HS512"
        ),
        "alg-RS256": with_header(alg="RS256"),
        "alg-null": with_header(alg=None),
        "alg-list": with_header(alg=["HS256"]),
        "alg-lowercase": with_header(alg="hs256"),
        "alg-missing": forge.token(claims, access_key, header={"typ": "at+jwt"}),
        "typ-JWT": with_header(typ="JWT"),
        "typ-refresh": forge.token(claims, access_key, header=REFRESH_HEADER),
        "kid-sql": forge.token(
            claims, "x" * 40, header={"alg": "HS256", "typ": "at+jwt", "kid": "' OR 1=1 --"}
        ),
        "jku-url": forge.token(
            claims,
            "x" * 40,
            header={"alg": "HS256", "typ": "at+jwt", "jku": "http://127.0.0.1:9/jwks"},
        ),
        "signature-empty": f"{header}.{payload}.",
        "signature-random": f"{header}.{payload}.{forge.b64(bytes(range(32)))}",
        "signature-truncated": f"{header}.{payload}.{signature[:-2]}",
        "signature-blank-secret": forge.token(claims, b""),
        "signature-foreign-secret": forge.token(claims, "f" * 48),
        "signature-refresh-secret": forge.token(claims, forge.refresh_secret(settings)),
        "payload-tampered": f"{header}.{tampered}.{signature}",
        "iss-wrong": forged(settings, clock, victim, iss="evil"),
        "iss-missing": forged(settings, clock, victim, iss=REMOVE),
        "aud-wrong": forged(settings, clock, victim, aud="other-service"),
        "aud-list": forged(settings, clock, victim, aud=[settings.token_audience]),
        "aud-missing": forged(settings, clock, victim, aud=REMOVE),
        "iat-future": forged(settings, clock, victim, iat=now + 3600, exp=now + 3600 + 60),
        "nbf-future": forged(settings, clock, victim, nbf=now + 3600),
        "lifetime-too-long": forged(settings, clock, victim, exp=now + 15 * 60 + 1),
        "typ-claim": forged(settings, clock, victim, typ="refresh"),
        "exp-string": forged(settings, clock, victim, exp="9999999999"),
        "exp-1e20": forged(settings, clock, victim, exp=1e20),
        "exp-true": forged(settings, clock, victim, exp=True),
        "exp-list": forged(settings, clock, victim, exp=[now + 60]),
        "exp-null": forged(settings, clock, victim, exp=None),
        "sub-number": forged(settings, clock, victim, sub=123),
        "sub-not-uuid": forged(settings, clock, victim, sub="1 OR 1=1"),
        "sid-not-uuid": forged(settings, clock, victim, sid="../../sessions"),
        "sub-of-another-user": forge.token(other, access_key),
        "sid-unknown": forged(settings, clock, victim, sid="00000000-0000-4000-8000-000000000000"),
        "client-token": forged(
            settings, clock, victim, sid=REMOVE, email=REMOVE, client_id="some-client"
        ),
        "two-segments": f"{header}.{payload}",
        "five-segments": f"{valid}.{payload}.{signature}",
        "padded": f"{valid}=",
        "non-base64url": f"{header}.{payload}.{signature[:-1]}+",
        "header-not-utf8": forge.token(claims, access_key, raw_header=b'{"alg":"HS256\xff"}'),
        "claims-not-object": forge.token(None, access_key, raw_claims=b"[]"),
        "refresh-token": victim["refresh_token"],
        "8KB": forged(settings, clock, victim, pad="x" * 8 * 1024),
        "100KB": forged(settings, clock, victim, pad="x" * 100 * 1024),
        "1MB": forged(settings, clock, victim, pad="x" * 1024 * 1024),
    }
    for claim in ("iss", "aud", "sub", "sid", "iat", "exp", "jti", "email", "scope"):
        result[f"no-{claim}"] = forged(settings, clock, victim, **{claim: REMOVE})
    return result


async def test_a_hand_forged_token_under_the_real_secret_is_accepted(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock, victim: dict[str, Any]
) -> None:
    """The baseline the attacks below change in one thing: it gets 200."""
    response = await profile(client, forged(settings, clock, victim))

    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == victim["id"]


async def test_every_bad_token_gets_the_same_403(
    client: httpx.AsyncClient, settings: Settings, clock: FakeClock, victim: dict[str, Any]
) -> None:
    """One body, one status, one header for every reason; nothing echoed, nothing crashed."""
    answers = {}
    for name, token in attacks(settings, clock, victim).items():
        response = await profile(client, token)
        assert_error(
            response, 403, "invalid_token", secrets=(*settings_secrets(settings), token[:64])
        )
        assert token not in response.text
        answers[name] = (
            response.status_code,
            response.content,
            response.headers.get("www-authenticate"),
        )

    assert len(set(answers.values())) == 1, answers
    assert (await profile(client, victim["access_token"])).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="none"),
        pytest.param([("Authorization", "")], id="empty"),
        pytest.param([("Authorization", "Bearer")], id="bearer-alone"),
        pytest.param([("Authorization", "Bearer ")], id="bearer-space"),
        pytest.param([("Authorization", "Basic dXNlcjpwYXNz")], id="basic"),
        pytest.param([("Authorization", "Token abc")], id="other-scheme"),
        pytest.param([("X-Access-Token", "{token}")], id="other-header"),
        pytest.param([("Cookie", "access_token={token}")], id="cookie"),
    ],
)
async def test_no_bearer_token_is_401_missing_token(
    client: httpx.AsyncClient, victim: dict[str, Any], headers: list[tuple[str, str]]
) -> None:
    """RFC 6750 §3: a request without bearer credentials is challenged, with no error code."""
    headers = [(name, value.format(token=victim["access_token"])) for name, value in headers]

    response = await client.get("/profile", headers=headers)

    assert_error(response, 401, "missing_token", secrets=(victim["access_token"],))
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("parameter", ["access_token", "token", "bearer", "authorization"])
async def test_a_token_in_the_query_string_is_never_accepted(
    client: httpx.AsyncClient, victim: dict[str, Any], parameter: str
) -> None:
    """RFC 9700 §4.3.2: tokens in URLs leak into logs and Referer; this service reads none."""
    response = await client.get("/profile", params={parameter: victim["access_token"]})

    assert_error(response, 401, "missing_token", secrets=(victim["access_token"],))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Bearer  {token}", id="two-spaces"),
        pytest.param("Bearer {token} ", id="trailing-space"),
        pytest.param("Bearer {token} extra", id="trailing-word"),
        pytest.param("Bearer {token},{token}", id="comma-list"),
        pytest.param('Bearer "{token}"', id="quoted"),
    ],
)
async def test_malformed_bearer_credentials_are_403(
    client: httpx.AsyncClient, victim: dict[str, Any], value: str
) -> None:
    response = await client.get(
        "/profile", headers={"Authorization": value.format(token=victim["access_token"])}
    )

    assert_error(response, 403, "invalid_token", secrets=(victim["access_token"],))


async def test_two_authorization_headers_are_refused_even_if_both_are_valid(
    client: httpx.AsyncClient, victim: dict[str, Any]
) -> None:
    bearer = f"Bearer {victim['access_token']}"

    response = await client.get(
        "/profile", headers=[("Authorization", bearer), ("Authorization", bearer)]
    )

    assert_error(response, 403, "invalid_token")


async def test_the_scheme_name_is_case_insensitive(
    client: httpx.AsyncClient, victim: dict[str, Any]
) -> None:
    """RFC 7235 §2.1: `bearer` and `BEARER` are `Bearer`."""
    for scheme in ("bearer", "BEARER"):
        response = await client.get(
            "/profile", headers={"Authorization": f"{scheme} {victim['access_token']}"}
        )
        assert response.status_code == 200


# -- time ------------------------------------------------------------------------------------


async def test_an_expired_token_is_token_expired(
    client: httpx.AsyncClient, clock: FakeClock, victim: dict[str, Any]
) -> None:
    clock.advance(15 * 60 + 30 - 1)
    assert (await profile(client, victim["access_token"])).status_code == 200

    clock.advance(1)
    response = await profile(client, victim["access_token"])

    assert_error(response, 403, "token_expired", secrets=(victim["access_token"],))
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_exp_equal_to_now_is_expired_without_leeway(
    make_settings: Any, clock: FakeClock, register_and_login: RegisterAndLogin, serve: Serve
) -> None:
    async with serve(make_settings(jwt_leeway=0), clock) as client:
        _, pair = await register_and_login(client)
        clock.advance(15 * 60 - 1)
        assert (await profile(client, pair["access_token"])).status_code == 200

        clock.advance(1)
        response = await profile(client, pair["access_token"])

    assert_error(response, 403, "token_expired")


# -- the user and the session behind the token -----------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE users SET disabled_at = now()", id="user-disabled"),
        pytest.param("DELETE FROM users", id="user-deleted"),
        pytest.param(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = 'admin'", id="session-revoked"
        ),
    ],
)
async def test_a_valid_token_stops_working_when_its_user_or_session_does(
    client: httpx.AsyncClient, db: asyncpg.Connection, victim: dict[str, Any], statement: str
) -> None:
    assert (await profile(client, victim["access_token"])).status_code == 200

    await db.execute(statement)
    response = await profile(client, victim["access_token"])

    assert_error(response, 403, "invalid_token")


async def test_logout_stops_the_sessions_access_tokens_at_once(
    client: httpx.AsyncClient, victim: dict[str, Any]
) -> None:
    await client.post("/logout", json={"refresh_token": victim["refresh_token"]})

    assert_error(await profile(client, victim["access_token"]), 403, "invalid_token")


async def test_a_token_outlives_its_sessions_absolute_end_nowhere(
    make_settings: Any, clock: FakeClock, register_and_login: RegisterAndLogin, serve: Serve
) -> None:
    """SESSION_MAX_AGE ends the session's access tokens too, even before their own exp."""
    async with serve(make_settings(session_max_age=600), clock) as client:
        _, pair = await register_and_login(client)
        clock.advance(599)
        assert (await profile(client, pair["access_token"])).status_code == 200

        clock.advance(1)
        response = await profile(client, pair["access_token"])

    assert_error(response, 403, "invalid_token")


async def test_another_users_valid_token_shows_only_that_user(
    client: httpx.AsyncClient, victim: dict[str, Any], register_and_login: RegisterAndLogin
) -> None:
    other, pair = await register_and_login(client)

    response = await profile(client, pair["access_token"])

    assert response.json()["user"]["id"] == other["id"] != victim["id"]
