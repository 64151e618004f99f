"""The throttles past their limits: a key already over its limit in a running window is read,
not counted, so a flood of refused requests writes nothing (no row lock, no WAL), while the
answers, Retry-After, the limits under concurrency and the audit of a crossing stay as they were
(`throttle._COUNTING`). On a real Postgres, with real concurrent requests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import asyncpg
from tokenrota_server.config import Settings
from tokenrota_server.db import throttle

from tests import support
from tests.http.test_recovery import forgot
from tests.http.test_register import post_register, registration_limit
from tests.support import PASSWORD, FakeClock, Register, Serve

WRONG = "not the password"


async def counters(db: asyncpg.Connection, *scopes: str) -> dict[str, tuple[int, str]]:
    """Each counter of `scopes` (default: all): scope → (attempts, xmin); a row written again
    gets a new xmin."""
    rows = await db.fetch(
        "SELECT scope, attempts, xmin::text AS xmin FROM login_attempts"
        " WHERE cardinality($1::text[]) = 0 OR scope = ANY($1)",
        scopes,
    )
    return {row["scope"]: (row["attempts"], row["xmin"]) for row in rows}


async def throttled_events(db: asyncpg.Connection) -> list[list[str]]:
    """The limits named by each `login_throttled` audit event, in order."""
    rows = await db.fetch(
        "SELECT details FROM audit_events WHERE action = 'login_throttled' ORDER BY id"
    )
    return [json.loads(row["details"])["limits"] for row in rows]


async def test_a_register_flood_past_the_limit_writes_nothing(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Once the address is over its limit, 20 registrations at once are all 429 with the
    window's Retry-After, and its counter row is not written again (same xmin, same count)."""
    limited = registration_limit(make_settings, 3)
    async with support.serve(limited, clock) as client:
        accepted = [
            (await post_register(client, f"ok-{n}@example.com", PASSWORD)).status_code
            for n in range(3)
        ]
        crossing = await post_register(client, "crossing@example.com", PASSWORD)
        over = await counters(db)
        clock.advance(100)

        flood = await asyncio.gather(
            *(post_register(client, f"flood-{n}@example.com", PASSWORD) for n in range(20))
        )

    assert accepted == [201] * 3
    assert (crossing.status_code, crossing.headers["retry-after"]) == (429, "600")
    assert {(r.status_code, r.headers["retry-after"]) for r in flood} == {(429, "500")}
    assert over[throttle.REGISTER_SCOPE][0] == 4
    assert await counters(db) == over
    assert await db.fetchval("SELECT count(*) FROM users") == 3


async def test_a_login_burst_past_both_limits_writes_nothing_and_audits_each_crossing_once(
    make_settings: Any, clock: FakeClock, register: Register, serve: Serve, db: asyncpg.Connection
) -> None:
    """Email limit 3, address limit 6. While only the email is over, the address still counts
    every attempt (as before); once both are over, 20 attempts at once write nothing. Each
    limit's crossing is audited once."""
    settings: Settings = make_settings(
        login_email_max_attempts=3, login_ip_max_attempts=6, login_throttle_window=600
    )
    async with serve(settings, clock) as client:
        user = await register(client)
        sequential = [
            (
                await client.post("/login", json={"email": user["email"], "password": WRONG})
            ).status_code
            for _ in range(7)
        ]
        over = await counters(db, "email", "ip")
        clock.advance(60)

        burst = await asyncio.gather(
            *(
                client.post("/login", json={"email": user["email"], "password": PASSWORD})
                for _ in range(20)
            )
        )

    assert sequential == [401] * 3 + [429] * 4
    # The email crossed at the 4th attempt and was not counted after; the address at the 7th.
    assert {scope: attempts for scope, (attempts, _) in over.items()} == {"email": 4, "ip": 7}
    assert {(r.status_code, r.headers["retry-after"]) for r in burst} == {(429, "540")}
    assert await counters(db, "email", "ip") == over
    assert await throttled_events(db) == [["email"], ["ip"]]


async def test_successes_in_flight_cannot_reopen_an_address_over_its_limit(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Address limit 6: six attempts counted, two of them right passwords still being checked;
    attempts refused meanwhile; then the two successes are taken back. The address stays
    refused for the rest of its window: its count, which stopped one past the limit, is not
    lowered while over. (Lowered, it would let a 7th guess through, which counting every
    refusal, as before, never did once two had been refused.)"""
    settings: Settings = make_settings(
        login_email_max_attempts=100, login_ip_max_attempts=6, login_throttle_window=600
    )
    ip, now = "192.0.2.9", clock()

    async def count(email: str) -> int | None:
        attempt = await throttle.count_attempt(db, settings, email=email, ip=ip, now=now)
        return attempt.retry_after

    counted = [await count(f"user-{n}@example.com") for n in range(6)]
    refused = [await count(f"late-{n}@example.com") for n in range(2)]
    for n in range(2):  # the two in flight were right
        await throttle.forgive_attempt(db, settings, email=f"user-{n}@example.com", ip=ip)
    after = await count("next@example.com")

    assert counted == [None] * 6
    assert refused == [600, 600]
    assert after == 600
    address = await db.fetchval(
        "SELECT attempts FROM login_attempts WHERE scope = 'ip' AND key_digest = $1",
        throttle.address_key(ip),
    )
    assert address == 7


async def test_an_address_under_its_limit_still_gets_its_attempt_back(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    settings: Settings = make_settings(login_ip_max_attempts=6, login_throttle_window=600)
    ip, now = "192.0.2.10", clock()
    for n in range(6):
        await throttle.count_attempt(db, settings, email=f"u{n}@example.com", ip=ip, now=now)
    await throttle.forgive_attempt(db, settings, email="u0@example.com", ip=ip)

    attempt = await throttle.count_attempt(db, settings, email="v@example.com", ip=ip, now=now)

    assert attempt.retry_after is None


async def test_a_forgot_flood_for_one_email_writes_nothing_to_its_counter(
    settings: Settings, clock: FakeClock, register: Register, db: asyncpg.Connection
) -> None:
    """Email limit 3: past it, 10 requests at once are 429 and leave the email's counter as it
    was, while the address (limit 20, not reached) counts each of them, as before."""
    limited = replace(
        settings,
        mail_poll_interval=0,
        password_forgot_email_max_attempts=3,
        login_throttle_window=600,
    )
    async with support.serve(limited, clock) as client:
        user = await register(client)
        accepted = [(await forgot(client, user["email"])).status_code for _ in range(3)]
        crossing = await forgot(client, user["email"])
        over = await counters(db)
        clock.advance(30)

        flood = await asyncio.gather(*(forgot(client, user["email"]) for _ in range(10)))

    assert accepted == [202] * 3
    assert crossing.status_code == 429
    assert {(r.status_code, r.headers["retry-after"]) for r in flood} == {(429, "570")}
    after = await counters(db)
    assert after[throttle.FORGOT_EMAIL_SCOPE] == over[throttle.FORGOT_EMAIL_SCOPE]
    assert over[throttle.FORGOT_EMAIL_SCOPE][0] == 4
    assert after[throttle.FORGOT_ADDRESS_SCOPE][0] == 4 + 10
    assert await db.fetchval("SELECT count(*) FROM mail_outbox") == 3


async def test_a_key_over_its_limit_counts_afresh_once_its_window_ends(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """The read that skips a key looks only at a window still running."""
    limited = registration_limit(make_settings, 1)
    async with support.serve(limited, clock) as client:
        statuses = [
            (await post_register(client, f"w{n}@example.com", PASSWORD)).status_code
            for n in range(3)
        ]
        clock.advance(600)
        again = await post_register(client, "again@example.com", PASSWORD)

    assert statuses == [201, 429, 429]
    assert again.status_code == 201
    assert (await counters(db))[throttle.REGISTER_SCOPE][0] == 1
