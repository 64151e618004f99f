"""argon2 capacity: new secrets keep to their share of the threads, so a login never waits
behind a registration flood; a check past ARGON2_MAX_QUEUED_CHECKS, or a new secret past
ARGON2_MAX_QUEUED_HASHES, is refused at once, alike for known and unknown emails, before any
throttle counts it and without writing anything."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings, load_settings
from tokenrota_server.db import throttle
from tokenrota_server.errors import ConfigError, Overloaded
from tokenrota_server.passwords import (
    CheckReservation,
    HashReservation,
    Passwords,
    argon2_thread_count,
    reserve_then_count,
)

from tests import support
from tests.checks import assert_error, settings_secrets
from tests.http.test_login import _comparable, post_login
from tests.mail_support import queued_token
from tests.oauth_support import client_token, create_client
from tests.support import PASSWORD, FakeClock

# Registrations hashing at once in the flood test: more than the share of two threads (one).
FLOOD = 6
# Costly enough that each hash lasts far longer than a login's few queries, so the order of
# events shows which work waited for which (never a measured duration).
SLOW_ARGON2 = {"argon2_time_cost": 3, "argon2_memory_cost": 65536, "argon2_parallelism": 1}
WRONG = "not the password"
# The address of every request the in-process client sends (httpx's ASGITransport).
ADDRESS = "127.0.0.1"
LOGIN_SCOPES = (throttle.EMAIL_SCOPE, throttle.ADDRESS_SCOPE)
# Only against a deadlock: how long the refusal test lets a refused login take before it
# concludes that the login was queued instead (a refusal takes no argon2 work at all).
DEADLOCK_GUARD_SECONDS = 20


class ObservedPasswords(Passwords):
    """The app's real Passwords, recording each argon2 call's start and end (in its worker
    thread, in order) and each hash and check asked for; checks can be held at a gate."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.events: list[tuple[str, str]] = []
        self.asked = {"hash": 0, "verify": 0}
        self._asked_more = asyncio.Condition()
        # Cleared: every check waits in its thread until the test sets it again.
        self.gate = threading.Event()
        self.gate.set()
        # The same for every hash of a new secret.
        self.hash_gate = threading.Event()
        self.hash_gate.set()

    async def hash(self, password: str, *, reservation: HashReservation | None = None) -> str:
        await self._count("hash")
        return await super().hash(password, reservation=reservation)

    async def verify(
        self,
        password_hash: str | None,
        password: str,
        *,
        reservation: CheckReservation | None = None,
    ) -> bool:
        await self._count("verify")
        return await super().verify(password_hash, password, reservation=reservation)

    async def until_asked(self, kind: str, count: int) -> None:
        """Wait until `count` calls of `kind` ("hash" or "verify") have been asked for."""
        async with self._asked_more:
            await self._asked_more.wait_for(lambda: self.asked[kind] >= count)

    async def _count(self, kind: str) -> None:
        async with self._asked_more:
            self.asked[kind] += 1
            self._asked_more.notify_all()

    def _hash_sync(self, password: str) -> str:
        self.hash_gate.wait()
        self.events.append(("hash", "start"))
        try:
            return super()._hash_sync(password)
        finally:
            self.events.append(("hash", "end"))

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        self.gate.wait()
        self.events.append(("verify", "start"))
        try:
            return super()._verify_sync(password_hash, password)
        finally:
            self.events.append(("verify", "end"))


@contextlib.asynccontextmanager
async def observed_app(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, clock: FakeClock
) -> AsyncIterator[tuple[httpx.AsyncClient, ObservedPasswords]]:
    """The service with its Passwords observable; every held check is let go at the end."""
    serving = support.serve_with_passwords(monkeypatch, settings, clock, ObservedPasswords)
    async with serving as (client, passwords):
        try:
            yield client, passwords
        finally:
            passwords.gate.set()
            passwords.hash_gate.set()


def most_at_once(events: list[tuple[str, str]], kind: str) -> int:
    """The largest number of `kind` calls that were running together."""
    running = peak = 0
    for event_kind, edge in events:
        if event_kind == kind:
            running += 1 if edge == "start" else -1
            peak = max(peak, running)
    return peak


@pytest.mark.slow  # argon2 at a cost that takes time, on purpose
async def test_a_login_is_checked_while_registrations_wait_for_their_hashing_share(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock
) -> None:
    """Six registrations hash one at a time on one of two threads; a login sent after all of
    them is checked on the other before most have started, and answers while they hash."""
    slow = make_settings(argon2_threads=2, **SLOW_ARGON2)
    async with observed_app(monkeypatch, slow, clock) as (client, passwords):
        user = await support.register(client)
        passwords.events.clear()
        passwords.asked["hash"] = 0
        flood = [
            asyncio.create_task(
                client.post(
                    "/register", json={"email": f"flood-{n}@example.com", "password": PASSWORD}
                )
            )
            for n in range(FLOOD)
        ]
        await passwords.until_asked("hash", FLOOD)

        login = await post_login(client, user["email"], PASSWORD)
        login_events = list(passwords.events)
        registered = await asyncio.gather(*flood)

    assert login.status_code == 200, login.text
    assert [answer.status_code for answer in registered] == [201] * FLOOD
    checked = login_events.index(("verify", "start"))
    # In one queue the check would start only after every hash asked before it had started.
    assert login_events[:checked].count(("hash", "start")) < FLOOD
    # The login answered while more hashes than the share were still to finish.
    assert FLOOD - login_events.count(("hash", "end")) > 1
    assert most_at_once(passwords.events, "hash") == 1


async def test_a_check_past_the_queue_limit_is_refused_alike_for_known_and_unknown_emails(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock
) -> None:
    """Two checks running and one waiting (the limit): the next login is 503 unavailable with
    Retry-After at once, byte for byte the same for a known and an unknown email; the three
    held logins then succeed."""
    busy = make_settings(argon2_threads=2, argon2_max_queued_checks=1)
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        user = await support.register(client)
        passwords.gate.clear()
        try:
            held = [
                asyncio.create_task(post_login(client, user["email"], PASSWORD)) for _ in range(3)
            ]
            await passwords.until_asked("verify", 3)
            probes = [
                asyncio.create_task(post_login(client, user["email"], PASSWORD)),
                asyncio.create_task(post_login(client, "nobody@example.com", PASSWORD)),
            ]
            _, queued = await asyncio.wait(probes, timeout=DEADLOCK_GUARD_SECONDS)
        finally:
            passwords.gate.set()
        known, unknown = await asyncio.gather(*probes)
        released = await asyncio.gather(*held)

    assert not queued, "a login past ARGON2_MAX_QUEUED_CHECKS waited instead of being refused"
    assert_error(known, 503, "unavailable", secrets=(*settings_secrets(busy), PASSWORD))
    assert known.headers["retry-after"] == "1"
    assert _comparable(unknown) == _comparable(known)
    assert [answer.status_code for answer in released] == [200] * 3


async def test_a_place_is_taken_before_the_count_and_given_back_when_refused(
    make_settings: Any,
) -> None:
    """reserve_then_count: no count without a place (503 first), every place in the stack
    back at once when the count refuses, and kept when it accepts."""
    passwords = Passwords(make_settings(argon2_threads=2, argon2_max_queued_checks=1))
    counted: list[str] = []

    async def count(answer: str) -> str:
        counted.append(answer)
        return answer

    try:
        with contextlib.ExitStack() as held:
            new_secret = held.enter_context(passwords.reserve_hash())
            check, _ = await reserve_then_count(
                held, passwords.reserve_check, lambda: count("refused"), lambda a: a == "refused"
            )
            refused_holds = (new_secret.held, check is not None and check.held)
        with contextlib.ExitStack() as held:
            check, _ = await reserve_then_count(
                held, passwords.reserve_check, lambda: count("accepted"), lambda a: a == "refused"
            )
            accepted_holds = check is not None and check.held
            # Two threads and one waiting check: with these, one more is refused before its count.
            for _ in range(2):
                held.enter_context(passwords.reserve_check())
            with pytest.raises(Overloaded):
                await reserve_then_count(
                    held, passwords.reserve_check, lambda: count("never"), lambda a: False
                )
    finally:
        passwords.close()

    assert refused_holds == (False, False)
    assert accepted_holds
    assert counted == ["refused", "accepted"]


def test_argon2_threads_default_to_the_cores_and_never_to_one() -> None:
    """0 (the default) is one per core, at least 2; 1 or a negative count is refused."""
    environ = {
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
    }

    assert argon2_thread_count(load_settings(environ)) >= 2
    assert argon2_thread_count(load_settings({**environ, "ARGON2_THREADS": "3"})) == 3
    for name, value in (
        ("ARGON2_THREADS", "1"),
        ("ARGON2_THREADS", "-2"),
        ("ARGON2_MAX_QUEUED_CHECKS", "0"),
        ("ARGON2_MAX_QUEUED_HASHES", "0"),
    ):
        with pytest.raises(ConfigError) as refused:
            load_settings({**environ, name: value})
        assert name in str(refused.value)
        assert "\n" not in str(refused.value)


# -- a refusal for overload counts toward no throttle ------------------------------------------


async def counters(db: asyncpg.Connection, *scopes: str) -> dict[tuple[str, bytes], int]:
    """The throttle counters of `scopes`: (scope, key digest) → attempts."""
    rows = await db.fetch(
        "SELECT scope, key_digest, attempts FROM login_attempts WHERE scope = ANY($1)", scopes
    )
    return {(row["scope"], bytes(row["key_digest"])): row["attempts"] for row in rows}


async def settle(tasks: list[asyncio.Task[httpx.Response]], count: int) -> list[httpx.Response]:
    """The `count` answers among `tasks` that come without waiting for a held argon2 run."""
    done: set[asyncio.Task[httpx.Response]] = set()
    while len(done) < count:
        finished, _ = await asyncio.wait(
            [task for task in tasks if task not in done],
            timeout=DEADLOCK_GUARD_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert finished, f"{len(done)} of {count} answered; the rest waited for argon2"
        done |= finished
    return [task.result() for task in tasks if task in done]


async def test_logins_refused_for_overload_count_toward_no_throttle(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Twelve wrong logins at once, half for a known and half for an unknown email, with room
    for three checks: nine are 503 at once, alike for both emails, and the counters hold the
    three that were checked. The owner's right password then still gets in under a limit of
    four per email, which the nine would have crossed."""
    busy = make_settings(argon2_threads=2, argon2_max_queued_checks=1, login_email_max_attempts=4)
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        user = await support.register(client)
        before = await support.table_snapshot(db)
        passwords.gate.clear()
        emails = [user["email"], "nobody@example.com"] * 6
        burst = [asyncio.create_task(post_login(client, email, WRONG)) for email in emails]
        try:
            refused = await settle(burst, 9)
            await passwords.until_asked("verify", 3)
            while_held = await counters(db, *LOGIN_SCOPES)
            checks_asked = passwords.asked["verify"]
        finally:
            passwords.gate.set()
        answers = await asyncio.gather(*burst)
        after = await counters(db, *LOGIN_SCOPES)
        unwritten = await support.table_snapshot(db)
        owner = await post_login(client, user["email"], PASSWORD)

    for response in refused:
        assert_error(response, 503, "unavailable", secrets=(*settings_secrets(busy), WRONG))
        assert response.headers["retry-after"] == "1"
        assert _comparable(response) == _comparable(refused[0])
    assert checks_asked == 3
    checked = [
        email for email, answer in zip(emails, answers, strict=True) if answer.status_code != 503
    ]
    assert [answer.status_code for answer in answers].count(401) == 3 == len(checked)
    expected = {(throttle.ADDRESS_SCOPE, throttle.address_key(ADDRESS)): 3}
    for email in set(checked):
        expected[(throttle.EMAIL_SCOPE, throttle.email_key(email))] = checked.count(email)
    assert while_held == after == expected
    assert unwritten == before
    assert owner.status_code == 200, owner.text


async def test_password_changes_refused_for_overload_count_and_change_nothing(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Six password changes at once with a wrong current password and room for three checks:
    three are 503 at once and counted nowhere, the three checked count; the password and the
    sessions are as they were."""
    busy = make_settings(argon2_threads=2, argon2_max_queued_checks=1)
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        user = await support.register(client)
        pair = await support.login(client, user["email"])
        before = await support.table_snapshot(db)
        body = {"current_password": WRONG, "new_password": "a brand new passphrase"}
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        passwords.gate.clear()
        burst = [
            asyncio.create_task(client.post("/password", json=body, headers=headers))
            for _ in range(6)
        ]
        try:
            refused = await settle(burst, 3)
            await passwords.until_asked("verify", 4)  # the login's, and three changes'
            while_held = await counters(db, *LOGIN_SCOPES)
        finally:
            passwords.gate.set()
        answers = await asyncio.gather(*burst)
        after = await counters(db, *LOGIN_SCOPES)

    for response in refused:
        assert_error(response, 503, "unavailable", secrets=(*settings_secrets(busy), WRONG))
        assert response.headers["retry-after"] == "1"
    assert sorted(answer.status_code for answer in answers) == [401] * 3 + [503] * 3
    expected = {
        (throttle.EMAIL_SCOPE, throttle.email_key(user["email"])): 3,
        (throttle.ADDRESS_SCOPE, throttle.address_key(ADDRESS)): 3,
    }
    assert while_held == after == expected
    assert await support.table_snapshot(db) == before


async def test_registrations_past_the_hashing_queue_are_refused_uncounted_and_unwritten(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Eight registrations at once with one hashing (the share of two threads) and room for
    one to wait: six are 503 with Retry-After at once, create no user and do not count; under
    a limit of five per address the two hashed leave room for three more, not none."""
    busy = make_settings(argon2_threads=2, argon2_max_queued_hashes=1, register_ip_max_attempts=5)
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        passwords.hash_gate.clear()
        burst = [
            asyncio.create_task(
                client.post(
                    "/register", json={"email": f"burst-{n}@example.com", "password": PASSWORD}
                )
            )
            for n in range(8)
        ]
        try:
            refused = await settle(burst, 6)
            await passwords.until_asked("hash", 2)
            while_held = await counters(db, throttle.REGISTER_SCOPE)
            users_while_held = await db.fetchval("SELECT count(*) FROM users")
        finally:
            passwords.hash_gate.set()
        answers = await asyncio.gather(*burst)
        later = [
            await client.post(
                "/register", json={"email": f"later-{n}@example.com", "password": PASSWORD}
            )
            for n in range(4)
        ]

    for response in refused:
        assert_error(response, 503, "unavailable", secrets=(*settings_secrets(busy), PASSWORD))
        assert response.headers["retry-after"] == "1"
    assert sorted(answer.status_code for answer in answers) == [201] * 2 + [503] * 6
    assert while_held == {(throttle.REGISTER_SCOPE, throttle.address_key(ADDRESS)): 2}
    assert users_while_held == 0
    assert [answer.status_code for answer in later] == [201, 201, 201, 429]
    registered = {
        answer.json()["user"]["email"] for answer in [*answers, *later] if answer.status_code == 201
    }
    emails = await db.fetch("SELECT email FROM users")
    assert {row["email"] for row in emails} == registered


async def test_a_refused_registration_flood_is_answered_429_not_503(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Registrations refused by the throttle give their place in argon2's queue back as soon as
    their count refuses them, before the connection and the transaction are let go: a flood
    from an address over its limit, 40 at a time, is answered 429 throughout, never 503, even
    with as few places (1 hashing + 3 waiting) as the pool has connections (4)."""
    busy = make_settings(
        argon2_threads=2, argon2_max_queued_hashes=3, register_ip_max_attempts=1, db_pool_max_size=4
    )
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        first = await client.post(
            "/register", json={"email": "first@example.com", "password": PASSWORD}
        )
        assert first.status_code == 201, first.text
        statuses: list[int] = []
        for burst in range(3):
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/register",
                        json={"email": f"flood-{burst}-{n}@example.com", "password": PASSWORD},
                    )
                    for n in range(40)
                )
            )
            statuses += [answer.status_code for answer in answers]
        held = passwords._hashes

    assert statuses == [429] * 120
    assert held == 0
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_a_refused_client_authentication_flood_is_answered_429_not_503(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """The same for OAuth client authentication: once the address is over its limit, 40 wrong
    secrets at a time are refused 429 throughout, never 503, with as many places among the
    checks (2 threads + 2 waiting) as the pool has connections (4)."""
    busy = make_settings(
        argon2_threads=2, argon2_max_queued_checks=2, login_ip_max_attempts=1, db_pool_max_size=4
    )
    client_id, _ = await create_client(db, busy)
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        first = await client_token(client, client_id, "wrong-secret")
        assert first.status_code == 401, first.text
        statuses: list[int] = []
        for burst in range(3):
            answers = await asyncio.gather(
                *(client_token(client, client_id, f"wrong-{burst}-{n}") for n in range(40))
            )
            statuses += [answer.status_code for answer in answers]
        held = passwords._checks

    assert statuses == [429] * 120
    assert held == 0


async def test_client_authentications_refused_for_overload_count_nothing_against_the_address(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Six client-credentials requests at once with wrong secrets (each its own argon2 run)
    and room for three checks: three are 503 at once; the address counts the three checked,
    which fail with 401 invalid_client."""
    busy = make_settings(argon2_threads=2, argon2_max_queued_checks=1)
    client_id, _ = await create_client(db, busy)
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        passwords.gate.clear()
        burst = [
            asyncio.create_task(client_token(client, client_id, f"wrong-secret-{n}"))
            for n in range(6)
        ]
        try:
            refused = await settle(burst, 3)
            await passwords.until_asked("verify", 3)
            while_held = await counters(db, throttle.ADDRESS_SCOPE)
        finally:
            passwords.gate.set()
        answers = await asyncio.gather(*burst)
        after = await counters(db, throttle.ADDRESS_SCOPE)

    for response in refused:
        assert_error(response, 503, "unavailable", secrets=settings_secrets(busy))
        assert response.headers["retry-after"] == "1"
    assert sorted(answer.status_code for answer in answers) == [401] * 3 + [503] * 3
    assert while_held == after == {(throttle.ADDRESS_SCOPE, throttle.address_key(ADDRESS)): 3}


async def test_a_reset_past_the_hashing_queue_is_refused_and_leaves_its_token_usable(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Three resets with one token at once, with room for two new secrets: the third is 503
    at once and writes nothing; of the two hashed, one changes the password and spends the
    token, the other finds it spent."""
    busy = make_settings(argon2_threads=2, argon2_max_queued_hashes=1, mail_poll_interval=0)
    async with observed_app(monkeypatch, busy, clock) as (client, passwords):
        user = await support.register(client)
        forgot = await client.post("/password/forgot", json={"email": user["email"]})
        assert forgot.status_code == 202, forgot.text
        token = await queued_token(db, busy, user["email"])
        before = await support.table_snapshot(db)
        body = {"token": token, "new_password": "a brand new passphrase"}
        passwords.asked["hash"] = 0
        passwords.hash_gate.clear()
        burst = [asyncio.create_task(client.post("/password/reset", json=body)) for _ in range(3)]
        try:
            (refused,) = await settle(burst, 1)
            await passwords.until_asked("hash", 2)
            while_held = await support.table_snapshot(db)
            open_tokens = await db.fetchval(
                "SELECT count(*) FROM account_tokens WHERE used_at IS NULL"
            )
        finally:
            passwords.hash_gate.set()
        answers = await asyncio.gather(*burst)

    assert_error(refused, 503, "unavailable", secrets=(*settings_secrets(busy), token))
    assert refused.headers["retry-after"] == "1"
    assert while_held == before
    assert open_tokens == 1
    assert sorted(answer.status_code for answer in answers) == [204, 400, 503]


async def test_reservations_are_bounded_released_once_and_handed_over_whole(
    make_settings: Any,
) -> None:
    """With 2 threads: 2 + 1 checks and 1 + 1 new secrets may be reserved, one more of either
    is `Overloaded`; a release (twice, or by the new owner after a hand-over) frees one place."""
    passwords = Passwords(
        make_settings(argon2_threads=2, argon2_max_queued_checks=1, argon2_max_queued_hashes=1)
    )
    try:
        checks = [passwords.reserve_check() for _ in range(3)]
        hashes = [passwords.reserve_hash() for _ in range(2)]
        with pytest.raises(Overloaded):
            passwords.reserve_check()
        with pytest.raises(Overloaded):
            passwords.reserve_hash()

        checks[0].release()
        checks[0].release()
        again = passwords.reserve_check()
        with pytest.raises(Overloaded):
            passwords.reserve_check()
        handed = checks[1].hand_over()
        checks[1].release()
        with pytest.raises(Overloaded):
            passwords.reserve_check()
        handed.release()
        passwords.reserve_check()
        hashes[0].release()
        passwords.reserve_hash()
    finally:
        passwords.close()

    assert [check.held for check in [*checks, again]] == [False, False, True, True]
    with pytest.raises(RuntimeError):
        await passwords.verify(None, PASSWORD, reservation=checks[0])
