"""Users' metadata: app_metadata (operators) and user_metadata (the user), their caps, the
keys operators choose as access-token claims, and what never enters a token."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings, load_settings
from tokenrota_server.errors import ConfigError
from tokenrota_server.metadata import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, REGISTERED_CLAIMS

from tests.admin_support import admin_client, bearer
from tests.oauth_support import claims_of
from tests.support import FakeClock, login, register_and_login, serve

CHOSEN = ("tenant", "plan")


@pytest.fixture
def claims_settings(settings: Settings) -> Settings:
    """The test settings with `tenant` and `plan` chosen as claims."""
    return replace(settings, token_claims_from_app_metadata=CHOSEN)


@pytest.fixture
async def client(claims_settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(claims_settings, clock) as client:
        yield client


def nested(depth: int) -> dict[str, Any]:
    """An object whose objects nest `depth` levels (itself included)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def sized(total: int) -> dict[str, Any]:
    """An object of exactly `total` bytes as compact JSON."""
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    return {"k": "x" * (total - overhead)}


async def users_row(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch("SELECT app_metadata, user_metadata, updated_at FROM users ORDER BY id")
    audit = await db.fetch("SELECT action FROM audit_events ORDER BY id")
    return [tuple(row) for row in rows] + [tuple(row) for row in audit]


async def patch_json(
    client: httpx.AsyncClient, path: str, value: Any, headers: dict[str, str]
) -> httpx.Response:
    """PATCH `value` as JSON with non-ASCII escaped, so lone surrogates get through."""
    return await client.patch(
        path,
        content=json.dumps(value).encode("ascii"),
        headers={**headers, "Content-Type": "application/json"},
    )


async def test_an_operator_sets_app_metadata_and_chosen_keys_become_claims(
    client: httpx.AsyncClient, db: asyncpg.Connection, claims_settings: Settings
) -> None:
    """Only the chosen keys, from the next login or refresh; the audit event keeps keys only."""
    _, admin = await admin_client(client, db, claims_settings)
    user, first = await register_and_login(client)
    value = {"tenant": "acme", "plan": {"tier": 2}, "internal": "not a claim"}

    response = await client.patch(
        f"/admin/users/{user['id']}", json={"app_metadata": value}, headers=admin
    )
    before = claims_of(first["access_token"])
    refreshed = await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    after = claims_of(refreshed.json()["access_token"])

    assert response.status_code == 200
    assert response.json()["app_metadata"] == value
    shown = await client.get(f"/admin/users/{user['id']}", headers=admin)
    assert shown.json()["app_metadata"] == value
    assert "tenant" not in before
    assert after["tenant"] == "acme"
    assert after["plan"] == {"tier": 2}
    assert "internal" not in after
    details = await db.fetchval(
        "SELECT details FROM audit_events WHERE action = 'app_metadata_set'"
    )
    assert json.loads(details) == {"keys": ["internal", "plan", "tenant"]}


async def test_a_refresh_picks_up_the_current_values(
    client: httpx.AsyncClient, db: asyncpg.Connection, claims_settings: Settings
) -> None:
    _, admin = await admin_client(client, db, claims_settings)
    user, pair = await register_and_login(client)
    path = f"/admin/users/{user['id']}"
    await client.patch(path, json={"app_metadata": {"tenant": "acme"}}, headers=admin)
    pair = (await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})).json()

    await client.patch(path, json={"app_metadata": {"plan": "pro"}}, headers=admin)
    pair = (await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})).json()

    claims = claims_of(pair["access_token"])
    assert claims["plan"] == "pro"
    assert "tenant" not in claims


async def test_metadata_never_replaces_a_minted_claim(
    db: asyncpg.Connection, claims_settings: Settings, clock: FakeClock
) -> None:
    """Even a row written behind the API's back, with settings that slipped past the start
    check, cannot stand in for sub or scope: minting keeps its own claims."""
    careless = replace(claims_settings)
    # Past __post_init__'s check, as a settings object built some other way could be.
    object.__setattr__(careless, "token_claims_from_app_metadata", ("sub", "scope", "tenant"))
    async with serve(careless, clock) as client:
        user, _ = await register_and_login(client)
        await db.execute(
            "UPDATE users SET app_metadata = $1::jsonb",
            json.dumps({"sub": "someone-else", "scope": "admin", "tenant": "acme"}),
        )

        pair = await login(client, user["email"])

    claims = claims_of(pair["access_token"])
    assert claims["sub"] == user["id"]
    assert claims["scope"] == ""
    assert claims["tenant"] == "acme"


@pytest.mark.parametrize(
    "value",
    [
        sized(MAX_METADATA_BYTES + 1),
        nested(MAX_METADATA_DEPTH + 1),
        {"k": [[[["too deep"]]]]},
        [],
        "text",
        None,
        {"k": "nul\x00"},
        {"nul\x00": 1},
        {"k": "\ud800"},
        *({claim: "x"} for claim in ("sub", "aud", "scope", "iss", "exp", "roles", "cnf", "act")),
    ],
)
async def test_bad_app_metadata_is_422_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, claims_settings: Settings, value: Any
) -> None:
    _, admin = await admin_client(client, db, claims_settings)
    user, _ = await register_and_login(client)
    before = await users_row(db)

    response = await patch_json(
        client, f"/admin/users/{user['id']}", {"app_metadata": value}, admin
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert await users_row(db) == before


@pytest.mark.parametrize("value", [sized(MAX_METADATA_BYTES), nested(MAX_METADATA_DEPTH), {}])
async def test_metadata_at_the_caps_is_taken(
    client: httpx.AsyncClient, db: asyncpg.Connection, claims_settings: Settings, value: Any
) -> None:
    _, admin = await admin_client(client, db, claims_settings)
    user, pair = await register_and_login(client)

    by_operator = await client.patch(
        f"/admin/users/{user['id']}", json={"app_metadata": value}, headers=admin
    )
    by_user = await client.patch("/profile", json={"user_metadata": value}, headers=bearer(pair))

    assert (by_operator.status_code, by_user.status_code) == (200, 200)
    assert by_operator.json()["app_metadata"] == value
    assert by_user.json()["user"]["user_metadata"] == value


async def test_a_user_sets_user_metadata_which_never_enters_a_token(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user, pair = await register_and_login(client)
    value = {"tenant": "chosen by the user", "theme": "dark"}

    response = await client.patch("/profile", json={"user_metadata": value}, headers=bearer(pair))
    profile = await client.get("/profile", headers=bearer(pair))
    refreshed = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    assert response.status_code == 200
    assert profile.json()["user"]["user_metadata"] == value
    claims = claims_of(refreshed.json()["access_token"])
    assert "tenant" not in claims
    assert "theme" not in claims
    actors = await db.fetch("SELECT actor, action FROM audit_events")
    assert [tuple(row) for row in actors] == [(f"user:{user['id']}", "user_metadata_set")]


@pytest.mark.parametrize(
    "body",
    [
        {"app_metadata": {"tenant": "mine"}},
        {"user_metadata": {}, "app_metadata": {}},
        {"user_metadata": sized(MAX_METADATA_BYTES + 1)},
        {"user_metadata": nested(MAX_METADATA_DEPTH + 1)},
        {"user_metadata": ["not", "an", "object"]},
    ],
)
async def test_a_user_cannot_set_app_metadata_or_pass_the_caps(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: dict[str, Any]
) -> None:
    _, pair = await register_and_login(client)
    before = await users_row(db)

    response = await client.patch("/profile", json=body, headers=bearer(pair))

    assert response.status_code == 422
    assert await users_row(db) == before


async def test_only_operators_set_app_metadata_and_only_live_sessions_set_their_own(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user, pair = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    before = await users_row(db)

    by_user = await client.patch(
        f"/admin/users/{user['id']}",
        json={"app_metadata": {"tenant": "mine"}},
        headers=bearer(pair),
    )
    anonymous = await client.patch("/profile", json={"user_metadata": {}})
    ended = await client.patch("/profile", json={"user_metadata": {}}, headers=bearer(pair))

    assert by_user.status_code == 403
    assert anonymous.status_code == 401
    assert ended.status_code == 403
    assert await users_row(db) == before


@pytest.mark.parametrize("chosen", ["sub", "tenant,aud", "scope", "auth_time", "client_id"])
def test_choosing_a_registered_claim_is_a_one_line_start_up_error(chosen: str) -> None:
    environment = {
        "ENV": "test",
        "ACCESS_TOKEN_SECRET": "a" + secrets.token_hex(32),
        "REFRESH_TOKEN_SECRET": "r" + secrets.token_hex(32),
    }
    allowed = load_settings({**environment, "TOKEN_CLAIMS_FROM_APP_METADATA": "tenant, plan"})

    with pytest.raises(ConfigError) as refused:
        load_settings({**environment, "TOKEN_CLAIMS_FROM_APP_METADATA": chosen})

    assert allowed.token_claims_from_app_metadata == ("tenant", "plan")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("TOKEN_CLAIMS_FROM_APP_METADATA may not name a registered claim")


def test_the_registered_claims_include_every_claim_the_service_mints() -> None:
    assert {"iss", "aud", "sub", "sid", "iat", "exp", "jti", "email", "scope", "roles"} <= (
        REGISTERED_CLAIMS
    )
    assert {"cnf", "amr", "acr", "auth_time", "act", "client_id"} <= REGISTERED_CLAIMS
