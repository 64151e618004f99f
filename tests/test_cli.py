"""`tokenrota create-user EMAIL`: the password from stdin, the user able to log in."""

from __future__ import annotations

import asyncio
import secrets
import subprocess

import asyncpg
import httpx

from tests.checks import assert_error
from tests.test_config import run_cli

PASSWORD = "a long enough cli password"


def cli_environment(database_url: str) -> dict[str, str]:
    return {
        "ENV": "test",
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "8192",
        "ARGON2_PARALLELISM": "1",
    }


async def create_user(
    database_url: str, email: str, stdin: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        run_cli, "create-user", email, environ=cli_environment(database_url), stdin=stdin
    )


async def test_create_user_then_login_works(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    result = await create_user(database_url, "cli@example.com", PASSWORD + "\n")

    assert result.returncode == 0, result.stderr
    user_id = result.stdout.strip()
    assert (
        await db.fetchval("SELECT id::text FROM users WHERE email = 'cli@example.com'") == user_id
    )
    assert PASSWORD not in result.stdout + result.stderr
    response = await client.post("/login", json={"email": "cli@example.com", "password": PASSWORD})
    assert response.status_code == 200, response.text
    profile = await client.get(
        "/profile", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert profile.json()["user"]["id"] == user_id


async def test_the_password_is_taken_whole_from_stdin(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """Only the line ending is stripped: spaces inside and around are part of the password."""
    password = "  spaced out password  "

    result = await create_user(database_url, "spaces@example.com", password + "\n")

    assert result.returncode == 0, result.stderr
    for attempt, status in ((password, 200), (password.strip(), 401)):
        response = await client.post(
            "/login", json={"email": "spaces@example.com", "password": attempt}
        )
        assert response.status_code == status


async def test_create_user_refuses_a_weak_password_without_echoing_it(
    db: asyncpg.Connection, database_url: str
) -> None:
    result = await create_user(database_url, "weak@example.com", "short7!\n")

    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "short7!" not in result.stderr
    assert "\n" not in result.stderr.strip()
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_create_user_refuses_a_taken_email_and_a_bad_one(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    assert (await create_user(database_url, "dup@example.com", PASSWORD + "\n")).returncode == 0

    taken = await create_user(database_url, "DUP@example.com", PASSWORD + "\n")
    invalid = await create_user(database_url, "not an email", PASSWORD + "\n")

    assert (taken.returncode, invalid.returncode) == (1, 1)
    assert "already exists" in taken.stderr
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    response = await client.post("/login", json={"email": "dup@example.com", "password": "x" * 9})
    assert_error(response, 401, "invalid_credentials")
