"""/login under attack: account probing, password edge cases, hostile input, rehashing."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import extract_parameters
from tokenrota_server.config import Settings
from tokenrota_server.passwords import HashReservation, Passwords

from tests import support
from tests.checks import assert_error, post_json, settings_secrets
from tests.support import PASSWORD, FakeClock, Login, Register, Serve, TableSnapshot


class CountingPasswords(Passwords):
    """The app's real Passwords, recording which hash each argon2 call worked on."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.verified: list[str] = []
        self.hashed = 0

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash)
        return super()._verify_sync(password_hash, password)

    async def hash(self, password: str, *, reservation: HashReservation | None = None) -> str:
        self.hashed += 1
        return await super().hash(password, reservation=reservation)


def counting_app(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, clock: FakeClock
) -> AbstractAsyncContextManager[tuple[httpx.AsyncClient, CountingPasswords]]:
    """The service with its Passwords counting (`support.serve_with_passwords`)."""
    return support.serve_with_passwords(monkeypatch, settings, clock, CountingPasswords)


async def post_login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await post_json(client, "/login", {"email": email, "password": password})


def _comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    # Every response has its own X-Request-ID; nothing else may differ.
    headers = [item for item in response.headers.multi_items() if item[0] != "x-request-id"]
    return response.status_code, response.content, sorted(headers)


# -- the same answer whether or not the account exists ---------------------------------------


async def test_unknown_email_wrong_password_and_disabled_user_answer_identically(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, register: Register
) -> None:
    """Status, body and every header are the same: nothing tells which it was."""
    user = await register(client)
    disabled = await register(client)
    await db.execute("UPDATE users SET disabled_at = now() WHERE id = $1::uuid", disabled["id"])

    wrong_password = await post_login(client, user["email"], PASSWORD + "!")
    unknown_email = await post_login(client, "nobody-" + user["email"], PASSWORD)
    disabled_user = await post_login(client, disabled["email"], PASSWORD)
    wrong_case_unknown = await post_login(client, "NOBODY@example.com", PASSWORD)

    assert_error(wrong_password, 401, "invalid_credentials", secrets=settings_secrets(settings))
    assert _comparable(unknown_email) == _comparable(wrong_password)
    assert _comparable(disabled_user) == _comparable(wrong_password)
    assert _comparable(wrong_case_unknown) == _comparable(wrong_password)
    assert "set-cookie" not in wrong_password.headers


async def test_an_unknown_email_costs_one_real_argon2_verification(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    register: Register,
) -> None:
    """Known or unknown, each failed login runs exactly one argon2id verification; for an
    unknown email it is against a real dummy hash made with the current parameters."""
    async with counting_app(monkeypatch, settings, clock) as (client, passwords):
        user = await register(client)
        stored = await db.fetchval("SELECT password_hash FROM users")
        passwords.verified.clear()

        await post_login(client, user["email"], "wrong password!")
        assert passwords.verified == [stored]
        passwords.verified.clear()

        await post_login(client, "nobody@example.com", "wrong password!")

        (dummy,) = passwords.verified
    assert dummy != stored
    assert dummy.startswith("$argon2id$")
    parameters = extract_parameters(dummy)
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (
        settings.argon2_time_cost,
        settings.argon2_memory_cost,
        settings.argon2_parallelism,
    )


async def test_a_disabled_user_is_verified_like_anyone_else(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    register: Register,
    table_snapshot: TableSnapshot,
) -> None:
    """The right password of a disabled account costs the same one verification, then fails."""
    async with counting_app(monkeypatch, settings, clock) as (client, passwords):
        user = await register(client)
        await db.execute("UPDATE users SET disabled_at = now()")
        before = await table_snapshot(db)
        passwords.verified.clear()

        response = await post_login(client, user["email"], PASSWORD)

        assert len(passwords.verified) == 1
    assert_error(response, 401, "invalid_credentials")
    assert await table_snapshot(db) == before


# -- passwords: length and truncation --------------------------------------------------------


@pytest.mark.parametrize("length", [8, 64, 72, 73, 128])
async def test_passwords_of_8_to_128_characters_work(
    client: httpx.AsyncClient, length: int, login: Login, register: Register
) -> None:
    password = ("pässwörd-" * 20)[:length]
    user = await register(client, password=password)

    pair = await login(client, user["email"], password)

    assert pair["token_type"] == "Bearer"


@pytest.mark.parametrize("length", [9, 64, 73, 100, 128])
async def test_passwords_are_never_truncated(
    client: httpx.AsyncClient, length: int, register: Register
) -> None:
    """pw and pw[:-1] never both work; nor does any prefix, bcrypt's 72 bytes included."""
    password = "".join(chr(ord("a") + i % 26) for i in range(length))
    user = await register(client, password=password)

    for wrong in {password[:-1], password[:72], password[:8], password + "x", password[1:]}:
        if wrong != password:
            response = await post_login(client, user["email"], wrong)
            assert_error(response, 401, "invalid_credentials")
    assert (await post_login(client, user["email"], password)).status_code == 200


@pytest.mark.parametrize("length", [129, 1000, 60_000])
async def test_overlong_passwords_are_refused_before_hashing(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    clock: FakeClock,
    length: int,
    register: Register,
) -> None:
    """No account can have a password over 128 characters: no argon2 work is spent on one."""
    async with counting_app(monkeypatch, settings, clock) as (client, passwords):
        user = await register(client)
        passwords.verified.clear()

        response = await post_login(client, user["email"], "p" * length)

        assert passwords.verified == []
    assert_error(response, 401, "invalid_credentials")


async def test_a_megabyte_password_is_refused_by_the_body_cap(
    client: httpx.AsyncClient, register: Register
) -> None:
    user = await register(client)

    response = await post_login(client, user["email"], "p" * 1024 * 1024)

    assert_error(response, 413, "payload_too_large")


async def test_login_is_case_insensitive_on_the_email(
    client: httpx.AsyncClient, login: Login, register: Register
) -> None:
    user = await register(client, email="Alice.Smith@Example.COM")

    pair = await login(client, "alice.smith@example.com")
    profile = await client.get(
        "/profile", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )

    assert profile.json()["user"]["id"] == user["id"]


# -- hostile input ---------------------------------------------------------------------------

HOSTILE_EMAILS = [
    "' OR '1'='1",
    "' OR 1=1 --@example.com",
    "x'; DROP TABLE users; --@example.com",
    "admin@example.com' --",
    "a\x00b@example.com",
    "\x00",
    "a@example.com\x00",
    "\ud800@example.com",
    "\udfff",
    "Ünïcødé@exämple.com",
    "用户@例子.广告",
    "ﬀ@example.com",
    "a@example.com\r\nBcc: x@y.z",
    "a" * 255 + "@example.com",
    "a" * 10_000,
    "",
    " ",
    "@",
    "\u202e@example.com",
]

HOSTILE_PASSWORDS = [
    "' OR '1'='1' --",
    "'; DROP TABLE users; --",
    "pass\x00word-long",
    "\x00" * 16,
    "\ud800\udc00-not-a-pair",
    "\ud800" * 10,
    "pässwörd-ünïcødé",
    "密码密码密码密码",
    "\u202e" * 10,
    "p" * 129,
    "p" * 20_000,
    "",
]


@pytest.mark.parametrize("email", HOSTILE_EMAILS, ids=range(len(HOSTILE_EMAILS)))
async def test_hostile_emails_at_login_get_a_4xx_and_touch_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    email: str,
    register: Register,
    table_snapshot: TableSnapshot,
) -> None:
    user = await register(client)
    before = await table_snapshot(db)

    response = await post_login(client, email, PASSWORD)

    assert_error(response, {400, 401, 422}, secrets=settings_secrets(settings))
    assert await table_snapshot(db) == before
    assert (await post_login(client, user["email"], PASSWORD)).status_code == 200


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS, ids=range(len(HOSTILE_PASSWORDS)))
async def test_hostile_passwords_at_login_get_a_4xx_and_touch_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    password: str,
    register: Register,
    table_snapshot: TableSnapshot,
) -> None:
    user = await register(client)
    before = await table_snapshot(db)

    response = await post_login(client, user["email"], password)

    assert_error(response, {400, 401, 422})
    assert await table_snapshot(db) == before


async def test_control_characters_in_the_user_agent_do_not_break_login(
    client: httpx.AsyncClient, db: asyncpg.Connection, register: Register
) -> None:
    """The session stores the printable part of the User-Agent; a NUL is no 500."""
    user = await register(client)

    response = await client.post(
        "/login",
        json={"email": user["email"], "password": PASSWORD},
        headers={"User-Agent": "evil\x00agent\x07/1.0"},
    )

    assert response.status_code == 200, response.text
    assert await db.fetchval("SELECT user_agent FROM sessions") == "evilagent/1.0"


# -- the token response ----------------------------------------------------------------------


async def test_token_responses_are_never_cached(
    client: httpx.AsyncClient, register: Register
) -> None:
    user = await register(client)

    response = await post_login(client, user["email"], PASSWORD)
    refreshed = await client.post(
        "/refresh", json={"refresh_token": response.json()["refresh_token"]}
    )

    for answer in (response, refreshed):
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["pragma"] == "no-cache"
        body: dict[str, Any] = answer.json()
        assert set(body) == {
            "access_token",
            "token_type",
            "expires_in",
            "refresh_token",
            "refresh_expires_in",
        }
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        assert body["refresh_expires_in"] == 7 * 24 * 3600


# -- rehashing -------------------------------------------------------------------------------


async def test_login_rehashes_when_the_argon2_parameters_changed(
    settings: Settings,
    make_settings: Any,
    clock: FakeClock,
    db: asyncpg.Connection,
    login: Login,
    register: Register,
    serve: Serve,
) -> None:
    """A hash made under old parameters is replaced on the next successful login, only then."""
    async with serve(settings, clock) as client:
        user = await register(client)
    old_hash = await db.fetchval("SELECT password_hash FROM users")
    stronger = make_settings(argon2_time_cost=2, argon2_memory_cost=2048)

    async with serve(stronger, clock) as client:
        assert (await post_login(client, user["email"], "wrong password!")).status_code == 401
        assert await db.fetchval("SELECT password_hash FROM users") == old_hash

        await login(client, user["email"])
        new_hash = await db.fetchval("SELECT password_hash FROM users")

        await login(client, user["email"])
        assert await db.fetchval("SELECT password_hash FROM users") == new_hash
        assert (await post_login(client, user["email"], PASSWORD)).status_code == 200

    assert new_hash != old_hash
    assert "m=2048,t=2," in new_hash
    assert "m=1024,t=1," in old_hash
