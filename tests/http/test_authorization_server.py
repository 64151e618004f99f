"""/oauth/revoke (RFC 7009), /oauth/introspect (RFC 7662) and the RFC 8414 metadata."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings
from tokenrota_server.db import oauth_clients, purge
from tokenrota_server.db.pool import create_pool
from tokenrota_server.errors import InvalidClient
from tokenrota_server.oauth import AuthorizationServer, ClientSecret
from tokenrota_server.oauth_clients import rotate_secret
from tokenrota_server.passwords import CheckReservation, Passwords
from tokenrota_server.tokens import TokenCodec

from tests.oauth_support import basic, client_token
from tests.support import CreateClient, FakeClock, RegisterAndLogin


async def introspect(
    client: httpx.AsyncClient, credentials: tuple[str, str], token: str, **form: str
) -> httpx.Response:
    return await client.post(
        "/oauth/introspect", data={"token": token, **form}, headers=basic(*credentials)
    )


async def revoke(
    client: httpx.AsyncClient, credentials: tuple[str, str], token: str
) -> httpx.Response:
    return await client.post("/oauth/revoke", data={"token": token}, headers=basic(*credentials))


async def test_introspection_of_an_active_client_token(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """An active client token answers its claims, and is served uncached."""
    owner = await create_client(db, settings, scope="read write")
    resource = await create_client(db, settings, scope="")
    body = (await client_token(client, *owner, scope="read")).json()

    response = await introspect(client, resource, body["access_token"])

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["active"] is True
    assert answer["scope"] == "read"
    assert answer["client_id"] == owner[0]
    assert answer["sub"] == owner[0]
    assert answer["token_type"] == "Bearer"
    assert answer["iss"] == settings.token_issuer
    assert answer["aud"] == settings.token_audience
    assert answer["exp"] - answer["iat"] == settings.access_token_ttl
    assert "sid" not in answer


async def test_introspection_of_user_tokens_follows_the_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """A user's access and refresh tokens are active while the session lives, then inactive."""
    resource = await create_client(db, settings)
    user, pair = await register_and_login(client)

    access = (await introspect(client, resource, pair["access_token"])).json()
    refresh = (await introspect(client, resource, pair["refresh_token"])).json()
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    access_after = (await introspect(client, resource, pair["access_token"])).json()
    refresh_after = (await introspect(client, resource, pair["refresh_token"])).json()

    assert access["active"] is True
    assert access["sub"] == user["id"]
    assert access["sid"] == refresh["sid"]
    assert "client_id" not in access
    assert refresh["active"] is True
    assert refresh["token_type"] == "refresh_token"
    assert access_after == {"active": False}
    assert refresh_after == {"active": False}


async def test_every_inactive_token_answers_exactly_active_false(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """Garbage, expired, spent, tampered, disabled client's and revoked: only {"active": false}."""
    resource = await create_client(db, settings)
    owner = await create_client(db, settings)
    _, pair = await register_and_login(client)
    client_access = (await client_token(client, *owner)).json()["access_token"]
    revoked_access = (await client_token(client, *owner)).json()["access_token"]
    await revoke(client, owner, revoked_access)
    spent = pair["refresh_token"]
    await client.post("/refresh", json={"refresh_token": spent})
    disabled_owner = await create_client(db, settings)
    disabled_access = (await client_token(client, *disabled_owner)).json()["access_token"]
    await db.execute(
        "UPDATE clients SET disabled_at = now() WHERE client_id = $1", disabled_owner[0]
    )
    tampered = client_access[:-4] + ("AAAA" if client_access[-4:] != "AAAA" else "BBBB")

    tokens = ["garbage", "a.b.c", spent, revoked_access, disabled_access, tampered, "x" * 5000]
    answers = [(await introspect(client, resource, token)).json() for token in tokens]
    clock.advance(settings.access_token_ttl + settings.jwt_leeway + 1)
    answers.append((await introspect(client, resource, client_access)).json())

    assert answers == [{"active": False}] * (len(tokens) + 1)


async def test_introspection_needs_client_authentication(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """No credentials or wrong ones: 401 invalid_client, and the token is not examined."""
    owner = await create_client(db, settings)
    token = (await client_token(client, *owner)).json()["access_token"]

    anonymous = await client.post("/oauth/introspect", data={"token": token})
    wrong = await introspect(client, (owner[0], "wrong"), token)
    missing = await client.post("/oauth/introspect", data={}, headers=basic(*owner))

    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert wrong.status_code == 401
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"


async def test_revocation_of_a_client_token_by_its_owner(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """The owner revokes its token: 200, and introspection calls it inactive; twice is fine."""
    owner = await create_client(db, settings)
    token = (await client_token(client, *owner)).json()["access_token"]

    first = await revoke(client, owner, token)
    second = await revoke(client, owner, token)

    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    assert second.status_code == 200
    assert (await introspect(client, owner, token)).json() == {"active": False}
    assert await db.fetchval("SELECT count(*) FROM revoked_access_tokens") == 1


async def test_revocation_never_touches_another_clients_token(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
) -> None:
    """Another client asking to revoke: 200 like any other answer, and the token stays active."""
    owner = await create_client(db, settings)
    intruder = await create_client(db, settings)
    token = (await client_token(client, *owner)).json()["access_token"]

    response = await revoke(client, intruder, token)

    assert response.status_code == 200
    assert (await introspect(client, owner, token)).json()["active"] is True
    assert await db.fetchval("SELECT count(*) FROM revoked_access_tokens") == 0


async def test_revoking_a_refresh_token_ends_its_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """A user's refresh token revokes its session; the pair stops working everywhere."""
    caller = await create_client(db, settings)
    _, pair = await register_and_login(client)

    response = await revoke(client, caller, pair["refresh_token"])

    assert response.status_code == 200
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "logout"
    refreshed = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 403
    profile = await client.get(
        "/profile", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert profile.status_code == 403


async def test_revoking_a_user_access_token_ends_its_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """RFC 7009 §2.1 lets an access token's revocation take its grant along: the session ends."""
    caller = await create_client(db, settings)
    _, pair = await register_and_login(client)

    response = await revoke(client, caller, pair["access_token"])

    assert response.status_code == 200
    assert await db.fetchval("SELECT revoked_at IS NOT NULL FROM sessions")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 10_000])
async def test_revocation_of_unknown_tokens_is_200_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    token: str,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """Unknown or invalid tokens: 200 (RFC 7009 §2.2), nothing revoked."""
    caller = await create_client(db, settings)
    await register_and_login(client)

    response = await revoke(client, caller, token)

    assert response.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL") == 0


async def test_revocation_of_expired_and_revoked_tokens_is_200(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
    register_and_login: RegisterAndLogin,
) -> None:
    """An expired client token and an already revoked refresh token: 200 both."""
    owner = await create_client(db, settings)
    token = (await client_token(client, *owner)).json()["access_token"]
    _, pair = await register_and_login(client)
    await revoke(client, owner, pair["refresh_token"])
    clock.advance(settings.access_token_ttl + settings.jwt_leeway + 1)

    expired = await revoke(client, owner, token)
    again = await revoke(client, owner, pair["refresh_token"])

    assert expired.status_code == 200
    assert again.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM revoked_access_tokens") == 0


async def test_revocation_needs_client_authentication(
    client: httpx.AsyncClient, db: asyncpg.Connection, register_and_login: RegisterAndLogin
) -> None:
    """Without client credentials: 401 invalid_client, and the session lives on."""
    _, pair = await register_and_login(client)

    response = await client.post("/oauth/revoke", data={"token": pair["refresh_token"]})

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert await db.fetchval("SELECT revoked_at FROM sessions") is None


async def test_metadata_describes_the_endpoints(client: httpx.AsyncClient) -> None:
    """RFC 8414 metadata names every endpoint and method we support; no jwks_uri under HS256.

    The issuer is no URL and PUBLIC_URL is unset, so the endpoints are under the service's own
    listening address (HOST and PORT), not the `testserver` the request was sent to.
    """
    response = await client.get("/.well-known/oauth-authorization-server")

    assert response.status_code == 200
    body = response.json()
    assert body["token_endpoint"] == "http://127.0.0.1:8000/oauth/token"
    assert body["revocation_endpoint"] == "http://127.0.0.1:8000/oauth/revoke"
    assert body["introspection_endpoint"] == "http://127.0.0.1:8000/oauth/introspect"
    assert body["grant_types_supported"] == [
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ]
    assert "password" not in body["grant_types_supported"]
    assert set(body["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    assert "jwks_uri" not in body
    assert (await client.get("/.well-known/jwks.json")).status_code == 404


class CountingPasswords(Passwords):
    """Real argon2, counting verifications."""

    verifications = 0

    async def verify(
        self,
        password_hash: str | None,
        password: str,
        *,
        reservation: CheckReservation | None = None,
    ) -> bool:
        self.verifications += 1
        return await super().verify(password_hash, password, reservation=reservation)


@contextlib.asynccontextmanager
async def counting_server(
    settings: Settings, pool_size: int = 1
) -> AsyncIterator[tuple[AuthorizationServer, asyncpg.Pool, CountingPasswords]]:
    """An AuthorizationServer whose argon2 verifications are counted, with a pool of its own."""
    passwords = CountingPasswords(settings)
    assert settings.database_url is not None
    pool = await create_pool(
        settings.database_url,
        min_size=1,
        max_size=pool_size,
        pooler=settings.database_pooler,
    )
    try:
        yield AuthorizationServer(settings, TokenCodec(settings), passwords), pool, passwords
    finally:
        await pool.close()
        passwords.close()


@pytest.mark.parametrize("client_id", ["no-such-client", "bad\x00id", "x" * 500, "é"])
async def test_an_unknown_client_costs_one_argon2_verification(
    db: asyncpg.Connection, settings: Settings, client_id: str, create_client: CreateClient
) -> None:
    """Unknown (or impossible) ids are verified against the dummy hash, as a wrong secret is."""
    known_id, _ = await create_client(db, settings)
    async with counting_server(settings) as (server, pool, passwords):
        with pytest.raises(InvalidClient):
            await server.authenticate(pool, ClientSecret(client_id, "secret"))
        unknown_cost = passwords.verifications
        with pytest.raises(InvalidClient):
            await server.authenticate(pool, ClientSecret(known_id, "wrong"))

    assert unknown_cost == 1
    assert passwords.verifications == 2


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
@pytest.mark.parametrize(
    "value", ["\x00", "a\x00b", "%00", "é" * 100, "'; DROP TABLE clients; --", "x" * 60_000]
)
async def test_odd_values_never_cause_a_500(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    path: str,
    value: str,
    create_client: CreateClient,
) -> None:
    """NUL bytes, SQL, non-ASCII and long values in every parameter: a 4xx or 200, tables intact."""
    credentials = await create_client(db, settings)
    before = await db.fetch("SELECT * FROM clients ORDER BY client_id")

    statuses = set()
    for form, headers in (
        ({"grant_type": value}, basic(*credentials)),
        ({"grant_type": "client_credentials", "scope": value}, basic(*credentials)),
        ({"grant_type": "refresh_token", "refresh_token": value}, {}),
        ({"token": value}, basic(*credentials)),
        ({"grant_type": "client_credentials", "client_id": value, "client_secret": value}, {}),
        ({"token": "x"}, basic(value, value)),
    ):
        response = await client.post(path, data=form, headers=headers)
        statuses.add(response.status_code)
        if response.status_code >= 400:
            assert set(response.json()) == {"error", "error_description"}

    assert max(statuses) < 500
    assert await db.fetch("SELECT * FROM clients ORDER BY client_id") == before


async def test_expired_revocations_are_purged(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    clock: FakeClock,
    create_client: CreateClient,
) -> None:
    """A revocation row outlives its token by nothing: purge deletes it after expiry only."""
    owner = await create_client(db, settings)
    token = (await client_token(client, *owner)).json()["access_token"]
    await revoke(client, owner, token)

    kept = await purge.delete_expired_batch(
        db,
        now=clock(),
        throttle_window=settings.login_throttle_window,
        batch_size=100,
        leeway=0,
    )
    clock.advance(settings.access_token_ttl)
    purged = await purge.delete_expired_batch(
        db,
        now=clock(),
        throttle_window=settings.login_throttle_window,
        batch_size=100,
        leeway=0,
    )

    assert kept.revoked_access_tokens == 0
    assert purged.revoked_access_tokens == 1
    assert await db.fetchval("SELECT count(*) FROM revoked_access_tokens") == 0


async def test_concurrent_authentications_with_one_secret_share_one_argon2_run(
    db: asyncpg.Connection, settings: Settings, create_client: CreateClient
) -> None:
    """20 at once with the right secret, nothing remembered yet: one verification, and every
    caller gets the client. 10 at once with a wrong secret: each refused (a failure is not
    remembered, so one that arrives after a check ended pays its own: no exact count)."""
    client_id, secret = await create_client(db, settings)
    async with counting_server(settings, pool_size=10) as (server, pool, passwords):
        right = await asyncio.gather(
            *(server.authenticate(pool, ClientSecret(client_id, secret)) for _ in range(20))
        )
        right_cost = passwords.verifications
        wrong = await asyncio.gather(
            *(server.authenticate(pool, ClientSecret(client_id, "wrong")) for _ in range(10)),
            return_exceptions=True,
        )

    assert {answer.client_id for answer in right} == {client_id}
    assert right_cost == 1
    assert all(isinstance(answer, InvalidClient) for answer in wrong)
    assert 1 <= passwords.verifications - right_cost <= len(wrong)


async def test_a_verified_client_is_remembered_until_its_secret_changes_or_it_is_disabled(
    db: asyncpg.Connection, settings: Settings, clock: FakeClock, create_client: CreateClient
) -> None:
    """One argon2 check serves repeat calls; rotation and disabling take effect at once."""
    client_id, secret = await create_client(db, settings)
    async with counting_server(settings) as (server, pool, passwords):
        for _ in range(5):
            await server.authenticate(pool, ClientSecret(client_id, secret))
        repeat_cost = passwords.verifications
        with pytest.raises(InvalidClient):
            await server.authenticate(pool, ClientSecret(client_id, secret + "x"))

        _, new_secret = await rotate_secret(pool, passwords, client_id, actor="test", now=clock())
        with pytest.raises(InvalidClient):
            await server.authenticate(pool, ClientSecret(client_id, secret))
        await server.authenticate(pool, ClientSecret(client_id, new_secret))

        await oauth_clients.disable_client(db, client_id, clock())
        with pytest.raises(InvalidClient):
            await server.authenticate(pool, ClientSecret(client_id, new_secret))

    assert repeat_cost == 1
