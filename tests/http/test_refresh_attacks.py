"""/refresh under attack: forged, crossed, tampered, spent and stale refresh tokens.

Each refusal is 403 invalid_token and writes nothing (unless it is reuse detection, which
revokes the session on purpose; see tests/http/test_refresh.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings
from tokenrota_server.tokens import RefreshClaims, TokenCodec

from tests import forge, support
from tests.checks import assert_error, settings_secrets
from tests.forge import ACCESS_HEADER, REFRESH_HEADER
from tests.support import FakeClock, RegisterAndLogin, Serve, TableSnapshot


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/refresh", json={"refresh_token": token})


@pytest.fixture
async def victim(
    client: httpx.AsyncClient, db: asyncpg.Connection, register_and_login: RegisterAndLogin
) -> dict[str, Any]:
    """A user with a live session and its first refresh token."""
    user, pair = await register_and_login(client)
    session_id = await db.fetchval("SELECT id::text FROM sessions")
    return {**user, **pair, "session_id": session_id}


async def assert_refused_and_nothing_written(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, token: str
) -> None:
    before = await support.table_snapshot(db)

    response = await refresh(client, token)

    assert_error(response, 403, "invalid_token", secrets=(*settings_secrets(settings), token))
    assert await support.table_snapshot(db) == before


async def test_an_access_token_is_not_a_refresh_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, victim: dict[str, Any]
) -> None:
    await assert_refused_and_nothing_written(client, db, settings, victim["access_token"])


@pytest.mark.parametrize(
    ("header", "secret_of"),
    [
        pytest.param(REFRESH_HEADER, forge.access_secret, id="refresh-claims-access-secret"),
        pytest.param(ACCESS_HEADER, forge.refresh_secret, id="access-header-refresh-secret"),
        pytest.param(ACCESS_HEADER, forge.access_secret, id="access-header-access-secret"),
        pytest.param({"alg": "HS512", "typ": "refresh+jwt"}, None, id="hs512"),
        pytest.param({"alg": "none", "typ": "refresh+jwt"}, forge.refresh_secret, id="alg-none"),
    ],
)
async def test_refresh_claims_under_the_wrong_key_or_header_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    victim: dict[str, Any],
    header: dict[str, str],
    secret_of: Any,
) -> None:
    """Claims naming the victim's real session, signed the wrong way."""
    claims = forge.refresh_claims(
        settings, int(clock.now.timestamp()), sub=victim["id"], sid=victim["session_id"]
    )
    if secret_of is None:
        token = forge.token(claims, forge.refresh_secret(settings), header=header, alg="HS512")
    else:
        token = forge.token(claims, secret_of(settings), header=header)

    await assert_refused_and_nothing_written(client, db, settings, token)


async def test_a_valid_signature_without_a_row_is_refused_and_revokes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    victim: dict[str, Any],
) -> None:
    """Properly signed, naming the victim's live session, but never issued: no row, 403.

    That it is not taken for a replay matters: otherwise anyone holding the secret's output for
    one session could kill it at will.
    """
    codec = TokenCodec(settings)
    claims = codec.new_refresh_claims(
        subject=victim["id"], session_id=victim["session_id"], now=clock.now
    )
    unknown_session = codec.new_refresh_claims(
        subject=victim["id"], session_id=str(uuid.uuid4()), now=clock.now
    )

    for token in (codec.mint_refresh(claims), codec.mint_refresh(unknown_session)):
        await assert_refused_and_nothing_written(client, db, settings, token)
    assert (await refresh(client, victim["refresh_token"])).status_code == 200


async def test_a_child_jti_forged_from_a_spent_token_gets_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    victim: dict[str, Any],
) -> None:
    """A token with the right child jti but other times does not hash to the child's row."""
    codec = TokenCodec(settings)
    parent = codec.verify_refresh(victim["refresh_token"], clock.now)
    assert (await refresh(client, victim["refresh_token"])).status_code == 200
    clock.advance(1)
    guess = codec.mint_refresh(
        RefreshClaims(
            subject=parent.subject,
            session_id=parent.session_id,
            jti=codec.child_jti(parent.jti),
            issued_at=parent.issued_at + 1,
            expires_at=parent.expires_at + 1,
        )
    )

    await assert_refused_and_nothing_written(client, db, settings, guess)


@pytest.mark.parametrize("part", [0, 1, 2])
async def test_a_tampered_token_is_refused_and_the_real_one_still_works(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    victim: dict[str, Any],
    part: int,
) -> None:
    pieces = victim["refresh_token"].split(".")
    pieces[part] = pieces[part][:5] + ("A" if pieces[part][5] != "A" else "B") + pieces[part][6:]
    tampered = ".".join(pieces)

    await assert_refused_and_nothing_written(client, db, settings, tampered)
    assert (await refresh(client, victim["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(lambda token: token + "=", id="padded"),
        pytest.param(lambda token: token + "==", id="padded-twice"),
        pytest.param(lambda token: token.replace(".", "=.", 1), id="padded-header"),
        pytest.param(lambda token: " " + token, id="leading-space"),
        pytest.param(lambda token: token + "\n", id="trailing-newline"),
    ],
)
async def test_another_spelling_of_a_spent_token_is_refused_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    victim: dict[str, Any],
    spell: Any,
) -> None:
    """A padded variant of a spent token neither buys a second child nor slips past reuse
    detection as a new token: only one spelling is ever accepted."""
    child = (await refresh(client, victim["refresh_token"])).json()
    clock.advance(1)

    await assert_refused_and_nothing_written(client, db, settings, spell(victim["refresh_token"]))
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 2
    assert (await refresh(client, child["refresh_token"])).status_code == 200


async def test_a_padded_variant_of_a_live_token_is_refused_and_does_not_spend_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, victim: dict[str, Any]
) -> None:
    await assert_refused_and_nothing_written(client, db, settings, victim["refresh_token"] + "=")

    assert (await refresh(client, victim["refresh_token"])).status_code == 200


# -- the session and the user ----------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE users SET disabled_at = now()", id="user-disabled"),
        pytest.param("DELETE FROM users", id="user-deleted"),
        pytest.param(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = 'admin'", id="session-revoked"
        ),
        pytest.param("UPDATE refresh_tokens SET revoked_at = now()", id="token-revoked"),
    ],
)
async def test_refresh_stops_when_the_user_or_session_does(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    victim: dict[str, Any],
    statement: str,
) -> None:
    await db.execute(statement)

    await assert_refused_and_nothing_written(client, db, settings, victim["refresh_token"])


async def test_after_logout_refresh_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, victim: dict[str, Any]
) -> None:
    assert (
        await client.post("/logout", json={"refresh_token": victim["refresh_token"]})
    ).status_code == 204

    await assert_refused_and_nothing_written(client, db, settings, victim["refresh_token"])


async def test_past_the_tokens_own_exp_refresh_is_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    victim: dict[str, Any],
) -> None:
    """The session (30 days) is still live; the token (7 days, plus leeway) is not."""
    clock.advance(settings.refresh_token_ttl + settings.jwt_leeway)

    await assert_refused_and_nothing_written(client, db, settings, victim["refresh_token"])
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 1


async def test_the_rows_expiry_holds_even_within_the_jwt_leeway(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    victim: dict[str, Any],
) -> None:
    """Past exp but inside the JWT leeway: the row's expires_at still refuses it."""
    clock.advance(settings.refresh_token_ttl + 1)

    await assert_refused_and_nothing_written(client, db, settings, victim["refresh_token"])


async def test_past_the_sessions_absolute_lifetime_refresh_is_refused(
    make_settings: Any,
    clock: FakeClock,
    db: asyncpg.Connection,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """Rotation never extends a session: SESSION_MAX_AGE after login, its tokens are done."""
    settings = make_settings(session_max_age=3600)
    async with serve(settings, clock) as client:
        _, pair = await register_and_login(client)
        token = pair["refresh_token"]
        for _ in range(5):
            clock.advance(700)
            response = await refresh(client, token)
            assert response.status_code == 200
            token = response.json()["refresh_token"]
        assert response.json()["refresh_expires_in"] == 3600 - 3500

        clock.advance(100)
        await assert_refused_and_nothing_written(client, db, settings, token)


# -- where the token comes from --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/refresh", "/logout"])
async def test_a_refresh_token_in_the_url_is_never_read(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    path: str,
    table_snapshot: TableSnapshot,
) -> None:
    """Not from the query string, not with an empty JSON body: 401, and the token is unspent."""
    before = await table_snapshot(db)

    bare = await client.post(path, params={"refresh_token": victim["refresh_token"]})
    with_body = await client.post(path, params={"refresh_token": victim["refresh_token"]}, json={})

    for response in (bare, with_body):
        assert_error(response, 401, "missing_token", secrets=(victim["refresh_token"],))
    assert await table_snapshot(db) == before
    assert (await refresh(client, victim["refresh_token"])).status_code == 200


@pytest.mark.parametrize("path", ["/refresh", "/logout"])
@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({}, id="no-body"),
        pytest.param({"json": {}}, id="empty-object"),
        pytest.param({"json": {"refresh_token": ""}}, id="empty-string"),
        pytest.param({"json": {"refresh_token": None}}, id="null"),
        pytest.param({"json": {"token": "x.y.z"}}, id="other-field"),
    ],
)
async def test_no_refresh_token_is_401_missing_token(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    victim: dict[str, Any],
    path: str,
    request_kwargs: dict[str, Any],
    table_snapshot: TableSnapshot,
) -> None:
    before = await table_snapshot(db)

    response = await client.post(path, **request_kwargs)

    assert_error(response, 401, "missing_token")
    assert await table_snapshot(db) == before


@pytest.mark.parametrize(
    "garbage",
    ["x", "a.b.c", "...", "null", "a" * 5000, "eyJ" * 2000, "Bearer x.y.z", "\u00e9.\u00e9.\u00e9"],
    ids=range(8),
)
async def test_garbage_refresh_tokens_are_403_and_write_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    victim: dict[str, Any],
    garbage: str,
) -> None:
    await assert_refused_and_nothing_written(client, db, settings, garbage)


# -- logout ----------------------------------------------------------------------------------


async def test_logout_with_a_forged_or_wrong_token_is_204_and_revokes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    victim: dict[str, Any],
    table_snapshot: TableSnapshot,
) -> None:
    """Idempotent and quiet, but only the session's own refresh token can end it: a validly
    signed token naming the victim's session without a row, an access token, garbage."""
    codec = TokenCodec(settings)
    never_issued = codec.mint_refresh(
        codec.new_refresh_claims(
            subject=victim["id"], session_id=victim["session_id"], now=clock.now
        )
    )
    before = await table_snapshot(db)

    for token in (never_issued, victim["access_token"], "garbage", victim["refresh_token"] + "="):
        response = await client.post("/logout", json={"refresh_token": token})
        assert response.status_code == 204
        assert response.content == b""

    assert await table_snapshot(db) == before
    assert (await refresh(client, victim["refresh_token"])).status_code == 200
