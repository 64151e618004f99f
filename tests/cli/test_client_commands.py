"""The client CLI: create-client, rotate-client-secret, disable-client, list-clients,
set-client-dpop."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import asyncpg
import httpx
from tokenrota_server.config import Settings
from tokenrota_server.db import schema

from tests.oauth_support import client_token, create_client
from tests.support import PROJECT_ROOT


async def cli(settings: Settings, *arguments: str) -> tuple[int, str, str]:
    """Run `tokenrota ARGUMENTS` against the test's database."""
    assert settings.database_url is not None
    environment = {
        **os.environ,
        "ENV": "test",
        "DATABASE_URL": settings.database_url,
        "ACCESS_TOKEN_SECRET": str(settings.access_token_secret),
        "REFRESH_TOKEN_SECRET": str(settings.refresh_token_secret),
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "ARGON2_PARALLELISM": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrota_server",
        *arguments,
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_create_client_prints_its_secret_once_and_stores_a_hash(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The secret is printed once; the row holds an argon2id hash; the secret works."""
    status, out, _ = await cli(settings, "create-client", "billing", "--scope", "read write")

    assert status == 0
    created = json.loads(out)
    assert set(created) == {"client_id", "client_secret"}
    row = await db.fetchrow("SELECT * FROM clients WHERE client_id = $1", created["client_id"])
    assert row["name"] == "billing"
    assert row["scopes"] == ["read", "write"]
    assert row["secret_hash"].startswith("$argon2id$")
    assert created["client_secret"] not in row["secret_hash"]
    response = await client_token(client, created["client_id"], created["client_secret"])
    assert response.status_code == 200
    actions = await db.fetch("SELECT actor, action FROM audit_events ORDER BY id")
    assert [tuple(row) for row in actions] == [("cli", "client_created")]

    status, listed, _ = await cli(settings, "list-clients")
    assert status == 0
    assert created["client_secret"] not in listed
    entry = json.loads(listed)
    assert entry["client_id"] == created["client_id"]
    assert entry["scopes"] == ["read", "write"]
    assert entry["disabled_at"] is None


async def test_rotate_secret_replaces_the_old_one(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """After rotation the new secret works and the old one is invalid_client."""
    client_id, secret = await create_client(db, settings, scope="read")

    status, rotated_out, _ = await cli(settings, "rotate-client-secret", client_id)

    assert status == 0
    rotated = json.loads(rotated_out)
    assert rotated["client_id"] == client_id
    old = await client_token(client, client_id, secret)
    new = await client_token(client, client_id, rotated["client_secret"])
    assert old.status_code == 401
    assert new.status_code == 200


async def test_disable_client_refuses_its_credentials(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """A disabled client cannot get tokens; disabling twice or an unknown id exits 1."""
    client_id, secret = await create_client(db, settings)

    status, _, _ = await cli(settings, "disable-client", client_id)
    again, _, error = await cli(settings, "disable-client", client_id)
    rotate_disabled, _, _ = await cli(settings, "rotate-client-secret", client_id)

    assert status == 0
    assert again == 1
    assert "no active client" in error
    assert rotate_disabled == 1
    response = await client_token(client, client_id, secret)
    assert response.status_code == 401


async def test_rotate_with_grace_keeps_the_old_secret_and_audits_as_the_cli(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The CLI rotates through the admin API's use case: the same grace, the same event."""
    client_id, secret = await create_client(db, settings)

    status, rotated_out, _ = await cli(
        settings, "rotate-client-secret", client_id, "--grace", "3600"
    )
    too_long, _, error = await cli(settings, "rotate-client-secret", client_id, "--grace", "604801")

    assert status == 0
    assert too_long == 1
    assert "grace_seconds" in error
    rotated = json.loads(rotated_out)
    old = await client_token(client, client_id, secret)
    new = await client_token(client, client_id, rotated["client_secret"])
    assert (old.status_code, new.status_code) == (200, 200)
    actions = await db.fetch("SELECT actor, action FROM audit_events ORDER BY id")
    assert [tuple(row) for row in actions] == [("cli", "client_secret_rotated")]


async def test_create_client_refuses_a_malformed_scope(settings: Settings) -> None:
    """A scope with a quote or a double space is refused, and nothing is stored."""
    status, out, error = await cli(settings, "create-client", "x", "--scope", 'read "write"')

    assert status == 1
    assert out == ""
    assert "scope" in error


async def test_migration_0002_downgrades_and_upgrades(
    database_url: str, db: asyncpg.Connection
) -> None:
    """Downgrading to 0001 drops the client tables; upgrading brings them back, empty."""
    tables = (
        "SELECT array_agg(table_name::text ORDER BY table_name) FROM information_schema.tables"
        " WHERE table_name IN ('clients', 'revoked_access_tokens')"
    )
    # alembic's env.py runs its own event loop: call it from a thread without one.
    await asyncio.to_thread(schema.downgrade, database_url, "0001")
    after_downgrade = await db.fetchval(tables)
    await asyncio.to_thread(schema.upgrade, database_url, "0002")

    assert after_downgrade is None
    assert await db.fetchval(tables) == ["clients", "revoked_access_tokens"]


async def test_create_client_with_dpop_bound_access_tokens_needs_proofs(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """--dpop-bound-access-tokens: stored, listed, and its secret alone gets no token."""
    status, out, _ = await cli(settings, "create-client", "billing", "--dpop-bound-access-tokens")
    created = json.loads(out)

    response = await client_token(client, created["client_id"], created["client_secret"])
    _, listed, _ = await cli(settings, "list-clients")

    assert status == 0
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    assert json.loads(listed)["dpop_bound_access_tokens"] is True


async def test_set_client_dpop_turns_the_requirement_on_and_off(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The same use case as PATCH /admin/clients/{id}: --on refuses the secret alone, --off
    accepts it again; each audited as `cli`. An unknown client is one error line; neither or
    both switches a usage error."""
    client_id, secret = await create_client(db, settings)

    on = await cli(settings, "set-client-dpop", client_id, "--on")
    refused = await client_token(client, client_id, secret)
    off = await cli(settings, "set-client-dpop", client_id, "--off")
    accepted = await client_token(client, client_id, secret)
    unknown = await cli(settings, "set-client-dpop", "0" * 32, "--on")
    neither = await cli(settings, "set-client-dpop", client_id)
    both = await cli(settings, "set-client-dpop", client_id, "--on", "--off")

    assert on[0] == 0, on
    assert json.loads(on[1])["dpop_bound_access_tokens"] is True
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_dpop_proof")
    assert json.loads(off[1])["dpop_bound_access_tokens"] is False
    assert accepted.status_code == 200, accepted.text
    assert (unknown[0], unknown[1]) == (1, "")
    assert unknown[2].startswith("error: ")
    assert len(unknown[2].strip().splitlines()) == 1
    assert neither[0] == both[0] == 2
    rows = await db.fetch(
        "SELECT actor, details FROM audit_events WHERE action = 'client_updated' ORDER BY id"
    )
    assert [(row["actor"], json.loads(row["details"])) for row in rows] == [
        ("cli", {"dpop_bound_access_tokens": True}),
        ("cli", {"dpop_bound_access_tokens": False}),
    ]
