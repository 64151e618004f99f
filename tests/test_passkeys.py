"""The passkey use case: each WebAuthn attack of SECURITY.md refused and audited, the counter
kept by a compare-and-set, a challenge spent once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.auth import Authenticator
from tokenrota_server.config import Settings
from tokenrota_server.db.purge import delete_expired_batch
from tokenrota_server.errors import InvalidPasskey
from tokenrota_server.passkeys import Passkeys
from tokenrota_server.passwords import Passwords
from tokenrota_server.tokens import TokenCodec

from tests import support
from tests.passkey_support import ORIGIN, SoftAuthenticator


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with the software authenticator's page as the passkey origin."""
    return replace(settings, webauthn_origins=(ORIGIN,))


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database, for calling the use case directly."""
    async with asyncpg.create_pool(settings.database_url, min_size=1, max_size=4) as created:
        yield created


def use_case(settings: Settings) -> Passkeys:
    """The passkey use case; checking assertions never signs in, so no password hashing runs."""
    return Passkeys(settings, Authenticator(settings, TokenCodec(settings), Passwords(settings)))


async def enrolled(client: httpx.AsyncClient) -> tuple[dict[str, Any], SoftAuthenticator]:
    """A user with one passkey, registered through the API."""
    user, pair = await support.register_and_login(client)
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    options = (await client.post("/passkeys/register/options", headers=headers)).json()
    authenticator = SoftAuthenticator()
    response = await client.post(
        "/passkeys/register",
        headers=headers,
        json={"credential": authenticator.create(options), "name": "laptop"},
    )
    assert response.status_code == 201, response.text
    return user, authenticator


async def request_options(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/passkeys/login/options", json={})
    assert response.status_code == 200, response.text
    options: dict[str, Any] = response.json()
    return options


async def refusals(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch(
        "SELECT details->>'reason' AS reason FROM audit_events"
        " WHERE action = 'passkey_refused' ORDER BY id"
    )
    return [row["reason"] for row in rows]


async def test_a_passkey_alone_signs_in_with_user_verification(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, clock: Any
) -> None:
    """A discoverable assertion with UV names its user and the methods hwk and user."""
    user, authenticator = await enrolled(client)
    options = await request_options(client)

    used = await use_case(settings).check_assertion(
        pool, credential=authenticator.get(options), now=clock(), ip=None, for_user=None
    )

    assert str(used.user_id) == user["id"]
    assert used.amr == ("hwk", "user")


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"origin": "http://localhost:9999"}, "origin"),
        ({"origin": "https://evil.example"}, "origin"),
        ({"rp_id": "evil.example"}, "rp_id"),
        ({"user_verified": False}, "user_verification"),
        ({"user_handle": uuid.uuid4().bytes}, "other_user"),
    ],
)
async def test_a_forged_assertion_is_refused_and_audited(
    client: httpx.AsyncClient,
    settings: Settings,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    clock: Any,
    forgery: dict[str, Any],
    reason: str,
) -> None:
    """Another origin or RP id, no user verification on a passkey alone, another user's handle:
    refused before the signature is trusted, with the reason audited."""
    _, authenticator = await enrolled(client)
    options = await request_options(client)

    with pytest.raises(InvalidPasskey):
        await use_case(settings).check_assertion(
            pool,
            credential=authenticator.get(options, **forgery),
            now=clock(),
            ip=None,
            for_user=None,
        )

    assert await refusals(db) == [reason]


async def test_a_second_factor_needs_only_presence_but_the_users_own_credential(
    client: httpx.AsyncClient,
    settings: Settings,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    clock: Any,
) -> None:
    """As a second factor, presence without UV passes for its user; another user's credential
    is refused and audited."""
    user, authenticator = await enrolled(client)
    other, _ = await enrolled(client)
    passkeys = use_case(settings)

    used = await passkeys.check_assertion(
        pool,
        credential=authenticator.get(await request_options(client), user_verified=False),
        now=clock(),
        ip=None,
        for_user=uuid.UUID(user["id"]),
    )
    with pytest.raises(InvalidPasskey):
        await passkeys.check_assertion(
            pool,
            credential=authenticator.get(await request_options(client)),
            now=clock(),
            ip=None,
            for_user=uuid.UUID(other["id"]),
        )

    assert used.amr == ("hwk",)
    assert await refusals(db) == ["other_user"]


async def test_a_replayed_or_expired_challenge_is_refused(
    client: httpx.AsyncClient,
    settings: Settings,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    clock: Any,
) -> None:
    """The same challenge twice (even with the counter moved on), or one older than its TTL."""
    _, authenticator = await enrolled(client)
    passkeys = use_case(settings)
    options = await request_options(client)
    await passkeys.check_assertion(
        pool, credential=authenticator.get(options), now=clock(), ip=None, for_user=None
    )
    stale = await request_options(client)
    clock.advance(121)

    for replayed in (authenticator.get(options), authenticator.get(stale)):
        with pytest.raises(InvalidPasskey):
            await passkeys.check_assertion(
                pool, credential=replayed, now=clock(), ip=None, for_user=None
            )

    assert await refusals(db) == ["challenge", "challenge"]


async def test_a_counter_that_goes_backwards_is_refused_and_audited(
    client: httpx.AsyncClient,
    settings: Settings,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    clock: Any,
) -> None:
    """A clone of the authenticator, its counter behind the stored one, is refused; the stored
    counter stays where the real one left it."""
    _, authenticator = await enrolled(client)
    passkeys = use_case(settings)
    await passkeys.check_assertion(
        pool,
        credential=authenticator.get(await request_options(client), sign_count=5),
        now=clock(),
        ip=None,
        for_user=None,
    )

    for count in (5, 3):
        with pytest.raises(InvalidPasskey):
            await passkeys.check_assertion(
                pool,
                credential=authenticator.get(await request_options(client), sign_count=count),
                now=clock(),
                ip=None,
                for_user=None,
            )

    assert await refusals(db) == ["counter", "counter"]
    assert await db.fetchval("SELECT sign_count FROM passkey_credentials") == 5


async def test_concurrent_assertions_with_one_counter_value_let_one_through(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, clock: Any
) -> None:
    """Two assertions carrying the same counter, each with its own challenge, race: the
    compare-and-set on the counter lets exactly one pass."""
    _, authenticator = await enrolled(client)
    passkeys = use_case(settings)
    credentials = [authenticator.get(await request_options(client), sign_count=7) for _ in range(2)]

    results = await asyncio.gather(
        *(
            passkeys.check_assertion(
                pool, credential=credential, now=clock(), ip=None, for_user=None
            )
            for credential in credentials
        ),
        return_exceptions=True,
    )

    assert sorted(type(result).__name__ for result in results) == ["InvalidPasskey", "PasskeyUse"]


async def test_a_bad_signature_is_refused_and_audited(
    client: httpx.AsyncClient,
    settings: Settings,
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    clock: Any,
) -> None:
    """An assertion signed by another key for the same credential id."""
    _, authenticator = await enrolled(client)
    impostor = SoftAuthenticator(
        credential_id=authenticator.credential_id, user_handle=authenticator.user_handle
    )

    with pytest.raises(InvalidPasskey):
        await use_case(settings).check_assertion(
            pool,
            credential=impostor.get(await request_options(client)),
            now=clock(),
            ip=None,
            for_user=None,
        )

    assert await refusals(db) == ["signature"]


async def test_the_purge_forgets_challenges_past_their_life(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Any
) -> None:
    """Options handed out and never used are deleted once expired, not before."""
    await request_options(client)
    clock.advance(121)
    await request_options(client)

    batch = await delete_expired_batch(
        db, now=clock(), throttle_window=900, batch_size=100, leeway=30
    )

    assert batch.webauthn_challenges == 1
    assert await db.fetchval("SELECT count(*) FROM webauthn_challenges") == 1
