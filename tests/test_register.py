"""/register under attack: duplicate accounts, the password policy, hostile emails."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.checks import assert_error, post_json
from tests.support import PASSWORD, FakeClock, Register, TableSnapshot
from tests.test_login import HOSTILE_EMAILS, HOSTILE_PASSWORDS, counting_app


async def post_register(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await post_json(client, "/register", {"email": email, "password": password})


async def test_register_answers_the_user_and_nothing_else(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """201 with id, email and created_at; no hash, no token; the password is stored hashed."""
    response = await post_register(client, "new@example.com", PASSWORD)

    assert response.status_code == 201
    assert set(response.json()) == {"user"}
    assert set(response.json()["user"]) == {"id", "email", "created_at"}
    assert "argon2" not in response.text
    stored = await db.fetchval("SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice@example.com", "alice@example.com"),
        ("alice@example.com", "ALICE@EXAMPLE.COM"),
        ("Alice@Example.com", "aLiCe@eXaMpLe.CoM"),
    ],
)
async def test_an_email_taken_in_any_letter_case_is_409(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    first: str,
    second: str,
    register: Register,
    table_snapshot: TableSnapshot,
) -> None:
    await register(client, email=first)
    before = await table_snapshot(db)

    response = await post_register(client, second, "another password")

    assert_error(response, 409, "email_taken")
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("length", [8, 64, 128])
async def test_passwords_of_8_to_128_characters_are_accepted(
    client: httpx.AsyncClient, length: int
) -> None:
    response = await post_register(client, f"len{length}@example.com", "x" * length)

    assert response.status_code == 201, response.text


@pytest.mark.parametrize("length", [0, 1, 7, 129, 1000, 60_000])
async def test_passwords_outside_8_to_128_are_refused_before_hashing(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    length: int,
    table_snapshot: TableSnapshot,
) -> None:
    async with counting_app(monkeypatch, settings, clock) as (client, passwords):
        before = await table_snapshot(db)

        response = await post_register(client, "short@example.com", "x" * length)

        assert passwords.hashed == 0
    assert_error(response, 422, "weak_password")
    assert await table_snapshot(db) == before


async def test_a_megabyte_password_is_refused_before_hashing_even_under_a_larger_body_cap(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Past the body cap it is 413; with a cap raised to let it through, still 422 unhashed."""
    roomy = make_settings(max_body_bytes=2 * 1024 * 1024)
    async with counting_app(monkeypatch, roomy, clock) as (client, passwords):
        response = await post_register(client, "big@example.com", "x" * 1024 * 1024)

        assert passwords.hashed == 0
    assert_error(response, 422, "weak_password")
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_megabyte_password_is_413_under_the_default_cap(client: httpx.AsyncClient) -> None:
    response = await post_register(client, "big@example.com", "x" * 1024 * 1024)

    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("email", HOSTILE_EMAILS, ids=range(len(HOSTILE_EMAILS)))
async def test_hostile_emails_are_refused_and_nothing_is_written(
    client: httpx.AsyncClient, db: asyncpg.Connection, email: str, table_snapshot: TableSnapshot
) -> None:
    """Anything that is not a plain printable ASCII address: 422, not a row."""
    before = await table_snapshot(db)

    response = await post_register(client, email, PASSWORD)

    assert_error(response, 422, "invalid_input")
    assert await table_snapshot(db) == before


@pytest.mark.parametrize(
    "email",
    [
        "o'reilly@example.com",
        "x'or'1'='1@example.com",
        "robert');drop_table_users;--@example.com",
        "%_*@example.com",
        "%@example.com",
        "_@example.com",
    ],
)
async def test_sql_looking_but_valid_emails_are_stored_literally(
    client: httpx.AsyncClient, db: asyncpg.Connection, email: str, register: Register
) -> None:
    """Quotes and wildcards are data: stored as given, matching nobody else's row."""
    other = await register(client)

    response = await post_register(client, email, PASSWORD)

    assert response.status_code == 201, response.text
    rows = await db.fetch("SELECT email FROM users ORDER BY created_at, email")
    assert sorted(row["email"] for row in rows) == sorted([other["email"], email])
    assert (
        await post_json(client, "/login", {"email": email, "password": PASSWORD})
    ).status_code == 200


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS, ids=range(len(HOSTILE_PASSWORDS)))
async def test_hostile_passwords_at_register_never_crash(
    client: httpx.AsyncClient, db: asyncpg.Connection, password: str
) -> None:
    """Either a user whose exact password then works, or a 4xx and no row."""
    response = await post_register(client, "target@example.com", password)

    if response.status_code == 201:
        login = await post_json(
            client, "/login", {"email": "target@example.com", "password": password}
        )
        assert login.status_code == 200
    else:
        assert_error(response, {400, 413, 422})
        assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_concurrent_registrations_of_one_email_create_one_user(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Ten racing requests in different letter cases: one 201, nine 409, one row."""
    spellings = ["race@example.com", "RACE@example.com", "Race@Example.com", "race@EXAMPLE.COM"]

    responses = await asyncio.gather(
        *(post_register(client, spellings[i % len(spellings)], PASSWORD) for i in range(10))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 9, statuses
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "email_taken")
    assert await db.fetchval("SELECT count(*) FROM users") == 1
