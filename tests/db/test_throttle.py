"""The login throttle (SECURITY.md, "Login and register", brute force), on a real Postgres,
across instances, and the client address it counts (TRUSTED_PROXIES)."""

from __future__ import annotations

import asyncio
import ipaddress
import math
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.requests import Request
from tokenrota_server.config import Settings
from tokenrota_server.http.remote_address import remote_address

from tests.oauth_support import basic, client_token
from tests.support import PASSWORD, CreateClient, FakeClock, Register, Serve

WRONG = "not the password"


@pytest.fixture
def limited(make_settings: Any) -> Settings:
    """Settings with small limits: 3 attempts per email, 6 per address, 10-minute windows."""
    settings: Settings = make_settings(
        login_email_max_attempts=3, login_ip_max_attempts=6, login_throttle_window=600
    )
    return settings


async def attempt(
    client: httpx.AsyncClient, email: str, password: str = WRONG, **headers: str
) -> httpx.Response:
    return await client.post("/login", json={"email": email, "password": password}, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_failures_per_email_end_in_429_with_retry_after(
    limited: Settings, clock: FakeClock, register: Register, serve: Serve
) -> None:
    """Past the email's limit even the right password gets 429 until the window ends."""
    async with serve(limited, clock) as client:
        user = await register(client)
        failures = [await attempt(client, user["email"]) for _ in range(3)]
        clock.advance(60)

        blocked = await attempt(client, user["email"], PASSWORD)

        assert [r.status_code for r in failures] == [401, 401, 401]
        assert blocked.status_code == 429
        assert blocked.json() == {
            "error": "too_many_attempts",
            "error_description": "Too many attempts; try again later.",
        }
        assert blocked.headers["retry-after"] == "540"
        clock.advance(540)
        assert (await attempt(client, user["email"], PASSWORD)).status_code == 200


async def test_unknown_email_is_throttled_the_same_way(
    limited: Settings, clock: FakeClock, register: Register, serve: Serve
) -> None:
    """An email without an account gets the same 401s, then the same 429 (status, body, header)."""
    async with serve(limited, clock) as client:
        user = await register(client)
        for email in (user["email"], "nobody@example.com"):
            for _ in range(3):
                assert (await attempt(client, email)).status_code == 401
        known = await attempt(client, user["email"])
        unknown = await attempt(client, "nobody@example.com")

    assert known.status_code == unknown.status_code == 429
    assert known.json() == unknown.json()
    assert known.headers["retry-after"] == unknown.headers["retry-after"]


async def test_the_email_counter_ignores_letter_case(
    limited: Settings, clock: FakeClock, serve: Serve
) -> None:
    """Alice@X and alice@x are one account, so one counter."""
    async with serve(limited, clock) as client:
        for email in ("Alice@Example.com", "alice@example.com", "ALICE@EXAMPLE.COM"):
            await attempt(client, email)

        assert (await attempt(client, "alice@example.COM")).status_code == 429


async def test_a_success_resets_the_emails_counter(
    limited: Settings, clock: FakeClock, register: Register, serve: Serve
) -> None:
    """Two failures, a success: the next three failures are 401 again, the fourth 429."""
    async with serve(limited, clock) as client:
        user = await register(client)
        for _ in range(2):
            await attempt(client, user["email"])
        assert (await attempt(client, user["email"], PASSWORD)).status_code == 200

        statuses = [(await attempt(client, user["email"])).status_code for _ in range(4)]

    assert statuses == [401, 401, 401, 429]


async def test_failures_per_address_across_many_emails(
    limited: Settings, clock: FakeClock, serve: Serve
) -> None:
    """Spraying one guess over many emails from one address hits the address's limit."""
    async with serve(limited, clock) as client:
        statuses = [
            (await attempt(client, f"victim-{n}@example.com")).status_code for n in range(8)
        ]

    assert statuses == [401] * 6 + [429] * 2


async def test_the_table_keeps_digests_not_emails(
    limited: Settings, clock: FakeClock, db: asyncpg.Connection, serve: Serve
) -> None:
    """No email or address is stored in the clear."""
    async with serve(limited, clock) as client:
        await attempt(client, "secret-person@example.com")

    rows = await db.fetch("SELECT scope, key_digest, attempts FROM login_attempts ORDER BY scope")
    assert [(row["scope"], row["attempts"]) for row in rows] == [("email", 1), ("ip", 1)]
    assert all(b"secret-person" not in row["key_digest"] for row in rows)


async def test_concurrent_guesses_cannot_slip_past_the_limit(
    limited: Settings, clock: FakeClock, register: Register, serve: Serve
) -> None:
    """20 guesses at once: the count is taken before argon2 runs, so exactly 3 are verified."""
    async with serve(limited, clock) as client:
        user = await register(client)

        responses = await asyncio.gather(*(attempt(client, user["email"]) for _ in range(20)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 3 + [429] * 17


async def test_concurrent_logins_from_one_address_never_deadlock(
    make_settings: Any, clock: FakeClock, register: Register, serve: Serve
) -> None:
    """Right and wrong passwords for one account from one address, all at once: a success
    takes its attempts back while others are being counted, on the same two counter rows,
    and every answer is a 200 or a 401, never a 500 from a deadlock between them."""
    settings = make_settings(login_email_max_attempts=1000, login_ip_max_attempts=1000)
    async with serve(settings, clock) as client:
        user = await register(client)
        passwords = [PASSWORD, WRONG] * 30

        responses = await asyncio.gather(
            *(attempt(client, user["email"], password) for password in passwords)
        )

    statuses = [response.status_code for response in responses]
    assert statuses == [200, 401] * 30


async def test_the_throttle_holds_across_two_instances(
    make_settings: Any, clock: FakeClock, register: Register, serve: Serve
) -> None:
    """Two app instances (two pools) on one database share the counters, also when racing."""
    settings = make_settings(login_email_max_attempts=4, login_ip_max_attempts=1000)
    async with serve(settings, clock) as first, serve(settings, clock) as second:
        user = await register(first)
        sequential = [
            (await attempt(client, user["email"])).status_code for client in (first, second)
        ]
        racing = await asyncio.gather(
            *(attempt(client, user["email"]) for client in [first, second] * 10)
        )
        after = await attempt(second, user["email"], PASSWORD)

    assert sequential == [401, 401]
    assert sorted(r.status_code for r in racing) == [401] * 2 + [429] * 18
    assert after.status_code == 429


async def test_password_change_attempts_count_toward_the_throttle(
    limited: Settings, clock: FakeClock, register: Register, serve: Serve
) -> None:
    """Guessing the current password at /password spends the same budget as /login."""
    async with serve(limited, clock) as client:
        user = await register(client)
        pair = (await attempt(client, user["email"], PASSWORD)).json()
        body = {"current_password": WRONG, "new_password": "a brand new passphrase"}

        statuses = [
            (
                await client.post("/password", json=body, headers=bearer(pair["access_token"]))
            ).status_code
            for _ in range(4)
        ]
        login_after = await attempt(client, user["email"], PASSWORD)

    assert statuses == [401, 401, 401, 429]
    assert login_after.status_code == 429


async def test_default_limits_are_well_under_100_failures_an_hour() -> None:
    """The defaults allow at most 10 failures per 15 minutes per email: 40 in an hour."""
    defaults = Settings.__dataclass_fields__
    per_email = defaults["login_email_max_attempts"].default
    window = defaults["login_throttle_window"].default

    assert isinstance(per_email, int)
    assert isinstance(window, int)
    assert per_email * math.ceil(3600 / window) <= 50


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection, register: Register, serve: Serve
) -> None:
    """A client cannot dodge the address limit, or fake its address, with X-Forwarded-For."""
    settings = make_settings(login_email_max_attempts=1000, login_ip_max_attempts=2)
    async with serve(settings, clock) as client:
        user = await register(client)
        statuses = [
            (
                await attempt(client, user["email"], **{"X-Forwarded-For": f"203.0.113.{n}"})
            ).status_code
            for n in range(3)
        ]

    assert statuses == [401, 401, 429]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection, register: Register, serve: Serve
) -> None:
    """Behind a trusted proxy, each forwarded client has its own counter and its own ip."""
    settings = make_settings(
        login_email_max_attempts=1000,
        login_ip_max_attempts=2,
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    async with serve(settings, clock) as client:
        user = await register(client)
        statuses = [
            (
                await attempt(client, user["email"], **{"X-Forwarded-For": f"203.0.113.{n}"})
            ).status_code
            for n in range(3)
        ]
        spoof = await attempt(
            client, user["email"], PASSWORD, **{"X-Forwarded-For": "1.2.3.4, 198.51.100.7"}
        )

    assert statuses == [401, 401, 401]
    assert spoof.status_code == 200
    assert await db.fetchval("SELECT ip FROM sessions") == "198.51.100.7"


def request_from(peer: str, *forwarded: str) -> Request[Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "headers": headers, "client": (peer, 1234)})


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.0.0.5", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.5", ["1.1.1.1, 198.51.100.7, 10.0.0.9"], "198.51.100.7"),
        ("10.0.0.5", ["1.1.1.1", "198.51.100.7"], "198.51.100.7"),
        ("10.0.0.5", ["10.0.0.8"], "10.0.0.8"),
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", ["not-an-address"], "10.0.0.5"),
        ("10.0.0.5", ["2001:db8::1"], "2001:db8::1"),
        ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),
    ],
)
def test_remote_address_reads_forwarded_for_from_the_right(
    settings: Settings, peer: str, forwarded: list[str], expected: str
) -> None:
    """The first hop from the right that is not a trusted proxy is the client."""
    from dataclasses import replace

    trusting = replace(settings, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))

    assert remote_address(request_from(peer, *forwarded), trusting) == expected


async def test_bad_client_credentials_are_throttled_per_address(
    limited: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    create_client: CreateClient,
    serve: Serve,
) -> None:
    """Each wrong client secret costs argon2, so past the address's limit they get 429."""
    client_id, secret = await create_client(db, limited)
    async with serve(limited, clock) as client:
        failures = [await client_token(client, client_id, "wrong") for _ in range(6)]
        refused = await client_token(client, client_id, secret)
        introspection = await client.post(
            "/oauth/introspect", data={"token": "x"}, headers=basic(client_id, secret)
        )
        clock.advance(600)
        after_the_window = await client_token(client, client_id, secret)

    assert [response.status_code for response in failures] == [401] * 6
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_attempts"
    assert 0 < int(refused.headers["retry-after"]) <= 600
    assert introspection.status_code == 429
    assert after_the_window.status_code == 200


async def test_client_authentications_that_succeed_do_not_add_up(
    limited: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    create_client: CreateClient,
    serve: Serve,
) -> None:
    """A client that authenticates takes its attempt back: busy services are never throttled."""
    first, first_secret = await create_client(db, limited)
    second, second_secret = await create_client(db, limited)
    async with serve(limited, clock) as client:
        responses = [
            await client_token(client, client_id, secret)
            for _ in range(10)
            for client_id, secret in ((first, first_secret), (second, second_secret))
        ]

    assert {response.status_code for response in responses} == {200}
    assert await db.fetchval("SELECT max(attempts) FROM login_attempts") == 0


async def test_the_client_throttle_holds_across_instances(
    limited: Settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    create_client: CreateClient,
    serve: Serve,
) -> None:
    """Failures at two instances on one database count together."""
    client_id, _ = await create_client(db, limited)
    async with serve(limited, clock) as one, serve(limited, clock) as two:
        responses = await asyncio.gather(
            *(client_token(instance, client_id, "wrong") for instance in [one, two] * 5)
        )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * 6 + [429] * 4
