"""/register under attack: duplicate accounts, the password policy, hostile emails."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings, load_settings
from tokenrota_server.db.purge import delete_expired_batch
from tokenrota_server.errors import ConfigError

from tests import support
from tests.checks import assert_error, post_json
from tests.http.test_login import HOSTILE_EMAILS, HOSTILE_PASSWORDS, counting_app
from tests.support import PASSWORD, FakeClock, Register, TableSnapshot


async def post_register(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await post_json(client, "/register", {"email": email, "password": password})


async def test_register_answers_the_user_and_nothing_else(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """201 with id, email and created_at; no hash, no token; the password is stored hashed."""
    response = await post_register(client, "new@example.com", PASSWORD)

    assert response.status_code == 201
    assert set(response.json()) == {"user"}
    assert set(response.json()["user"]) == {"id", "email", "created_at", "email_verified"}
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


# Each parsed by a mail library as other or more recipients than the one it seems to name.
ADDRESS_LISTS = [
    "x,victim@corp.test",
    "Victim<atk@evil.test>",
    "atk(victim@corp.test)@evil.test",
    "atk@evil.test(comment)",
    '"victim@corp.test"@evil.test',
    "g:victim@corp.test;",
    "=?utf-8?q?victim=40corp.test?=@evil.test",
    "robert');drop_table_users;--@example.com",
]


@pytest.mark.parametrize("email", ADDRESS_LISTS)
@pytest.mark.parametrize("path", ["/register", "/password/forgot"])
async def test_an_email_that_is_not_one_mailbox_is_422_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    email: str,
    path: str,
    table_snapshot: TableSnapshot,
) -> None:
    """An address list, a display name, a comment, a quoted local part, a group, an encoded
    word: 422 invalid_input at every endpoint that takes an email; no user, no counter, no
    message queued."""
    before = await table_snapshot(db)

    response = await post_json(client, path, {"email": email, "password": PASSWORD})

    assert_error(response, 422, "invalid_input")
    assert await table_snapshot(db) == before
    assert await db.fetchval("SELECT count(*) FROM login_attempts") == 0
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 0


async def test_a_mailbox_is_stored_normalised_and_found_however_it_is_spelt(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """The domain is stored as lower-case A-labels, the local part as given; a login or a
    second registration spelling the domain otherwise names the same account."""
    response = await post_register(client, "Ann.Lee@BÜCHER.Example", PASSWORD)
    again = await post_register(client, "ann.lee@xn--bcher-kva.example", PASSWORD)
    login = await post_json(
        client, "/login", {"email": "ANN.LEE@bücher.example", "password": PASSWORD}
    )

    assert response.status_code == 201, response.text
    assert response.json()["user"]["email"] == "Ann.Lee@xn--bcher-kva.example"
    assert await db.fetchval("SELECT email FROM users") == "Ann.Lee@xn--bcher-kva.example"
    assert_error(again, 409, "email_taken")
    assert login.status_code == 200


@pytest.mark.parametrize(
    "email",
    [
        "o'reilly@example.com",
        "x'or'1'='1@example.com",
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


# -- the throttle: registrations per remote address (REGISTER_IP_MAX_ATTEMPTS) ----------------


def registration_limit(make_settings: Any, limit: int, **changes: Any) -> Settings:
    """The test settings with a real register limit and 10-minute windows."""
    settings: Settings = make_settings(
        register_ip_max_attempts=limit, login_throttle_window=600, **changes
    )
    return settings


async def register_from(client: httpx.AsyncClient, email: str, address: str) -> int:
    """Register with X-Forwarded-For naming `address`; the status."""
    body = {"email": email, "password": PASSWORD}
    response = await client.post("/register", json=body, headers={"X-Forwarded-For": address})
    return response.status_code


async def test_past_the_limit_register_is_429_before_argon2_and_writes_nothing(
    make_settings: Any,
    clock: FakeClock,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    table_snapshot: TableSnapshot,
) -> None:
    """N registrations pass, the N+1st is 429 with Retry-After: no hash, no row, no user."""
    limited = registration_limit(make_settings, 3)
    async with counting_app(monkeypatch, limited, clock) as (client, passwords):
        allowed = [await post_register(client, f"n{n}@example.com", PASSWORD) for n in range(3)]
        clock.advance(60)
        before = await table_snapshot(db)
        refused = await post_register(client, "n3@example.com", PASSWORD)

        assert [response.status_code for response in allowed] == [201] * 3
        assert_error(refused, 429, "too_many_attempts")
        assert refused.headers["retry-after"] == "540"
        assert passwords.hashed == 3
        assert await table_snapshot(db) == before
        assert await db.fetchval("SELECT count(*) FROM users WHERE email = 'n3@example.com'") == 0


async def test_another_address_is_not_affected(make_settings: Any, clock: FakeClock) -> None:
    """Behind a trusted proxy each client address has its own budget."""
    limited = registration_limit(
        make_settings, 2, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    async with support.serve(limited, clock) as client:
        first = [await register_from(client, f"a{n}@example.com", "203.0.113.1") for n in range(3)]
        other = await register_from(client, "b@example.com", "203.0.113.2")

    assert first == [201, 201, 429]
    assert other == 201


async def test_forwarded_for_does_not_dodge_the_limit_without_trusted_proxies(
    make_settings: Any, clock: FakeClock
) -> None:
    """X-Forwarded-For from an untrusted peer is ignored: the peer's own address is counted."""
    limited = registration_limit(make_settings, 2)
    async with support.serve(limited, clock) as client:
        statuses = [
            await register_from(client, f"c{n}@example.com", f"203.0.113.{n}") for n in range(3)
        ]

    assert statuses == [201, 201, 429]


async def test_a_taken_email_over_the_limit_is_429_like_a_free_one(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Over the limit the answer cannot tell whether the email has an account."""
    limited = registration_limit(make_settings, 2)
    async with support.serve(limited, clock) as client:
        await post_register(client, "taken@example.com", PASSWORD)
        taken_under = await post_register(client, "taken@example.com", PASSWORD)
        taken = await post_register(client, "taken@example.com", PASSWORD)
        free = await post_register(client, "free@example.com", PASSWORD)

    assert_error(taken_under, 409, "email_taken")
    assert_error(taken, 429, "too_many_attempts")
    assert (taken.status_code, taken.content, taken.headers["retry-after"]) == (
        free.status_code,
        free.content,
        free.headers["retry-after"],
    )
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_concurrent_registrations_cannot_slip_past_the_limit(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """20 at once against a limit of 3: exactly 3 are counted through (201 or 409), 17 are 429."""
    limited = registration_limit(make_settings, 3)
    async with support.serve(limited, clock) as client:
        responses = await asyncio.gather(
            *(post_register(client, f"racer-{n % 2}@example.com", PASSWORD) for n in range(20))
        )

    through = [r.status_code for r in responses if r.status_code != 429]
    assert len(through) == 3, sorted(r.status_code for r in responses)
    assert set(through) <= {201, 409}
    assert await db.fetchval("SELECT count(*) FROM users") == through.count(201)


async def test_two_instances_share_the_limit(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Two app instances (two pools) on one database count together, also when racing."""
    limited = registration_limit(make_settings, 4)
    async with support.serve(limited, clock) as one, support.serve(limited, clock) as two:
        sequential = [
            (await post_register(instance, f"s{n}@example.com", PASSWORD)).status_code
            for n, instance in enumerate((one, two))
        ]
        racing = await asyncio.gather(
            *(
                post_register(instance, f"r{n}@example.com", PASSWORD)
                for n, instance in enumerate([one, two] * 5)
            )
        )

    assert sequential == [201, 201]
    assert sorted(r.status_code for r in racing) == [201] * 2 + [429] * 8
    assert await db.fetchval("SELECT count(*) FROM users") == 4


async def test_the_window_rolls_over(make_settings: Any, clock: FakeClock) -> None:
    """When the window that refused ends, the address may register again, up to the limit."""
    limited = registration_limit(make_settings, 1)
    async with support.serve(limited, clock) as client:
        first = await post_register(client, "w1@example.com", PASSWORD)
        clock.advance(599)
        refused = await post_register(client, "w2@example.com", PASSWORD)
        clock.advance(1)
        again = await post_register(client, "w2@example.com", PASSWORD)
        refused_again = await post_register(client, "w3@example.com", PASSWORD)

    assert first.status_code == again.status_code == 201
    assert_error(refused, 429, "too_many_attempts")
    assert refused.headers["retry-after"] == "1"
    assert_error(refused_again, 429, "too_many_attempts")
    assert refused_again.headers["retry-after"] == "600"


async def test_bad_input_is_refused_without_spending_the_budget(
    make_settings: Any, clock: FakeClock
) -> None:
    """A malformed email or a weak password is 422 and is not counted; a good request then is."""
    limited = registration_limit(make_settings, 1)
    async with support.serve(limited, clock) as client:
        bad = [
            await post_register(client, "not an email", PASSWORD),
            await post_register(client, "x@example.com", "short"),
        ]
        good = await post_register(client, "x@example.com", PASSWORD)

    assert [response.status_code for response in bad] == [422, 422]
    assert good.status_code == 201


async def test_the_table_keeps_a_digest_of_the_address_under_its_own_scope(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """One 'register_ip' counter, keyed by a digest; login counters are untouched."""
    limited = registration_limit(make_settings, 5)
    async with support.serve(limited, clock) as client:
        await post_register(client, "d1@example.com", PASSWORD)
        await post_register(client, "d2@example.com", PASSWORD)

    rows = await db.fetch("SELECT scope, key_digest, attempts FROM login_attempts")
    assert [(row["scope"], row["attempts"]) for row in rows] == [("register_ip", 2)]
    assert all(b"127.0.0.1" not in row["key_digest"] for row in rows)


async def test_purge_deletes_registration_counters_whose_window_is_over(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    limited = registration_limit(make_settings, 5)
    async with support.serve(limited, clock) as client:
        await post_register(client, "p@example.com", PASSWORD)

    kept = await delete_expired_batch(
        db, now=clock() + timedelta(seconds=599), throttle_window=600, batch_size=100, leeway=0
    )
    purged = await delete_expired_batch(
        db, now=clock() + timedelta(seconds=600), throttle_window=600, batch_size=100, leeway=0
    )

    assert (kept.login_attempts, purged.login_attempts) == (0, 1)
    assert await db.fetchval("SELECT count(*) FROM login_attempts") == 0


SECRETS = {
    "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
    "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
    "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
}


@pytest.mark.parametrize(("value", "limit"), [("25", 25), ("", 10)])
def test_register_ip_max_attempts_is_read_from_the_environment(value: str, limit: int) -> None:
    environ = {**SECRETS, "REGISTER_IP_MAX_ATTEMPTS": value}

    assert load_settings(environ).register_ip_max_attempts == limit


@pytest.mark.parametrize("value", ["0", "-1", "ten"])
def test_a_register_limit_that_is_not_a_positive_number_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="REGISTER_IP_MAX_ATTEMPTS"):
        load_settings({**SECRETS, "REGISTER_IP_MAX_ATTEMPTS": value})


def test_the_default_limit_is_10_per_15_minutes() -> None:
    """10 accounts per address per 15 minutes: 40 argon2 hashes an hour at most, per address."""
    defaults = Settings.__dataclass_fields__

    assert defaults["register_ip_max_attempts"].default == 10
    assert defaults["login_throttle_window"].default == 15 * 60
