"""The audit log's security events, each written with the change it records, and its purge
after AUDIT_RETENTION; and the operator's CLI commands for roles and users."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings
from tokenrota_server.db.pool import create_pool
from tokenrota_server.db.purge import purge_expired

from tests.db.test_purge import run_cli
from tests.oauth_support import claims_of
from tests.support import PASSWORD, FakeClock, Serve, login, register, register_and_login


async def events(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT actor, action, target, user_id, ip, details FROM audit_events ORDER BY id"
    )
    return [{**dict(row), "details": json.loads(row["details"])} for row in rows]


async def test_a_failed_login_burst_is_recorded_once_when_it_crosses_the_throttle(
    make_settings: Any, clock: FakeClock, serve: Serve, db: asyncpg.Connection
) -> None:
    """The first refused attempt of a window is recorded, not each one after it; the event
    names the user by id (never the email) and the address."""
    settings = make_settings(login_email_max_attempts=3, login_ip_max_attempts=1000)
    async with serve(settings, clock) as client:
        user = await register(client)
        statuses = [
            (
                await client.post(
                    "/login", json={"email": user["email"], "password": "wrong!wrong"}
                )
            ).status_code
            for _ in range(6)
        ]
        for _ in range(2):
            await client.post(
                "/login", json={"email": "nobody@example.com", "password": "wrong!wrong"}
            )
        await client.post("/login", json={"email": "nobody@example.com", "password": "wrong!w"})
        for _ in range(2):
            await client.post(
                "/login", json={"email": "nobody@example.com", "password": "wrong!wrong"}
            )

    assert statuses == [401, 401, 401, 429, 429, 429]
    logged = await events(db)
    assert [(e["action"], e["actor"], e["details"]) for e in logged] == [
        ("login_throttled", "system", {"limits": ["email"]}),
        ("login_throttled", "system", {"limits": ["email"]}),
    ]
    assert logged[0]["user_id"] == uuid.UUID(user["id"])
    assert logged[1]["user_id"] is None
    assert user["email"] not in json.dumps(logged, default=str)
    assert "nobody" not in json.dumps(logged, default=str)


async def test_guessing_at_password_change_crossing_the_throttle_is_recorded_once(
    make_settings: Any, clock: FakeClock, serve: Serve, db: asyncpg.Connection
) -> None:
    settings = make_settings(login_email_max_attempts=2, login_ip_max_attempts=1000)
    async with serve(settings, clock) as client:
        user, pair = await register_and_login(client)
        statuses = [
            (
                await client.post(
                    "/password",
                    json={"current_password": "a wrong guess", "new_password": "whatever long"},
                    headers={"Authorization": f"Bearer {pair['access_token']}"},
                )
            ).status_code
            for _ in range(4)
        ]

    assert statuses == [401, 401, 429, 429]
    assert [(e["action"], e["user_id"]) for e in await events(db)] == [
        ("login_throttled", uuid.UUID(user["id"]))
    ]


async def test_reuse_detection_is_recorded_with_the_revocation(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: FakeClock
) -> None:
    user, pair = await register_and_login(client)
    await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    clock.advance(60)

    replay = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    assert replay.status_code == 403
    logged = await events(db)
    assert [(e["action"], e["actor"], e["user_id"]) for e in logged] == [
        ("reuse_detected", "system", uuid.UUID(user["id"]))
    ]
    assert logged[0]["details"]["session_id"] == await db.fetchval("SELECT id::text FROM sessions")


async def test_a_password_change_is_recorded_as_the_users_own(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user, pair = await register_and_login(client)

    changed = await client.post(
        "/password",
        json={"current_password": PASSWORD, "new_password": "another long password"},
        headers={"Authorization": f"Bearer {pair['access_token']}"},
    )
    refused = await client.post(
        "/password",
        json={"current_password": "not the password", "new_password": "yet another password"},
        headers={"Authorization": f"Bearer {pair['access_token']}"},
    )

    assert changed.status_code == 204
    assert refused.status_code == 401
    assert [(e["action"], e["actor"]) for e in await events(db)] == [
        ("password_changed", f"user:{user['id']}")
    ]


async def test_purge_deletes_audit_events_older_than_the_retention_only(
    settings: Settings, database_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    now = clock()
    retention = timedelta(seconds=settings.audit_retention)
    for action, at in (
        ("old", now - retention - timedelta(seconds=1)),
        ("recent", now - retention + timedelta(seconds=1)),
    ):
        await db.execute(
            "INSERT INTO audit_events (at, actor, action) VALUES ($1, 'cli', $2)", at, action
        )
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        batches = await purge_expired(pool, settings, now=now, wait=True)
    finally:
        await pool.close()

    assert [batch.audit_events for batch in batches] == [1]
    assert await db.fetchval("SELECT array_agg(action) FROM audit_events") == ["recent"]


def test_audit_retention_must_be_positive(settings: Settings) -> None:
    from dataclasses import replace

    from tokenrota_server.errors import ConfigError

    with pytest.raises(ConfigError, match="AUDIT_RETENTION"):
        replace(settings, audit_retention=0)


@pytest.mark.slow
async def test_the_cli_creates_roles_grants_lists_enables_and_erases_with_audit_rows(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    """The operator's first set-up without the API; every change is an audit row by cli."""
    user = await register(client)
    await login(client, user["email"])
    await db.execute("UPDATE users SET disabled_at = now() WHERE id = $1", uuid.UUID(user["id"]))

    created = await run_cli(database_url, "create-role", "support", "--scope", "read tickets:write")
    granted = await run_cli(database_url, "grant-role", user["email"].upper(), "support")
    unknown_role = await run_cli(database_url, "grant-role", user["email"], "nosuch")
    unknown_user = await run_cli(database_url, "grant-role", "nobody@example.com", "support")
    bad_scope = await run_cli(database_url, "create-role", "x", "--scope", 'a"b')
    listed = await run_cli(database_url, "list-users", "--email", user["email"][:6].upper())
    enabled = await run_cli(database_url, "enable-user", user["email"])
    relogged = await login(client, user["email"])
    revoked = await run_cli(database_url, "revoke-role", user["email"], "support")
    erased = await run_cli(database_url, "delete-user", user["email"])
    gone = await run_cli(database_url, "delete-user", user["email"])

    assert created[0] == 0, created[2]
    assert json.loads(created[1])["scopes"] == ["read", "tickets:write"]
    assert granted[:2] == (0, "role granted\n")
    assert unknown_role[0] == 1
    assert unknown_role[2] == "error: No role has this name.\n"
    assert unknown_user[2] == "error: No user has this email.\n"
    assert bad_scope[0] == 1
    assert len(bad_scope[2].splitlines()) == 1
    assert [json.loads(line)["roles"] for line in listed[1].splitlines()] == [["support"]]
    assert enabled[:2] == (0, "user enabled\n")
    assert claims_of(relogged["access_token"])["roles"] == ["support"]
    assert revoked[:2] == (0, "role revoked\n")
    assert erased[0] == 0
    assert gone[0] == 1
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    logged = await events(db)
    assert {e["actor"] for e in logged} == {"cli"}
    assert [e["action"] for e in logged] == [
        "role_put",
        "role_granted",
        "user_enabled",
        "role_revoked",
        "user_erased",
    ]


async def test_create_role_with_require_mfa_from_the_cli(
    database_url: str, db: asyncpg.Connection
) -> None:
    """`create-role NAME --require-mfa`: the role's scopes go only into aal2 tokens."""
    created = await run_cli(
        database_url, "create-role", "payouts", "--scope", "pay", "--require-mfa"
    )
    plain = await run_cli(database_url, "create-role", "reader", "--scope", "read")

    assert created[0] == 0, created[2]
    assert json.loads(created[1])["require_mfa"] is True
    assert json.loads(plain[1])["require_mfa"] is False
    assert await db.fetchval("SELECT require_mfa FROM roles WHERE name = 'payouts'") is True
