"""Guessing second factors: the throttles per user and per mfa_token, and one answer, after
the same steps, for every kind of wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server import totp
from tokenrota_server.db import audit, factors, throttle
from tokenrota_server.mfa_crypto import FactorKeys

from tests.checks import assert_error
from tests.mfa_support import TotpUser, bearer, enrol_totp, mfa_login, start_login, totp_user
from tests.support import FakeClock, login, register


async def attempt(client: httpx.AsyncClient, mfa_token: str, **answer: str) -> httpx.Response:
    return await client.post("/login/mfa", json={"mfa_token": mfa_token, **answer})


async def test_five_wrong_codes_spend_an_mfa_token(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """MFA_TOKEN_MAX_ATTEMPTS (5): the sixth try on the token is 429, even with the right
    code, and no session starts; a new login (the password again) gets a new token."""
    who = await totp_user(client, clock)
    started = await start_login(client, who.email)
    for _ in range(5):
        assert_error(await attempt(client, started["mfa_token"], code="000000"), 401)
    sessions_before = await db.fetchval("SELECT count(*) FROM sessions")

    refused = await attempt(client, started["mfa_token"], code=who.code(clock))

    assert_error(refused, 429, "too_many_attempts")
    assert int(refused.headers["retry-after"]) > 0
    assert await db.fetchval("SELECT count(*) FROM sessions") == sessions_before
    fresh = await start_login(client, who.email)
    assert (await attempt(client, fresh["mfa_token"], code=who.code(clock))).status_code == 200


async def test_wrong_codes_across_many_mfa_tokens_are_counted_per_user(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """MFA_USER_MAX_ATTEMPTS (10) in the window, whatever the tokens: then 429 for the user,
    at the step-up too, until the window ends."""
    who = await totp_user(client, clock)
    for _ in range(5):
        started = await start_login(client, who.email)
        for _ in range(2):
            assert_error(await attempt(client, started["mfa_token"], code="000000"), 401)

    started = await start_login(client, who.email)
    refused = await attempt(client, started["mfa_token"], code=who.code(clock))

    assert_error(refused, 429, "too_many_attempts")
    clock.advance(15 * 60)
    started = await start_login(client, who.email)
    assert (await attempt(client, started["mfa_token"], code=who.code(clock))).status_code == 200


async def test_a_right_code_clears_the_users_count(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """The owner's own typos do not add up to a lock-out across successful logins."""
    who = await totp_user(client, clock)
    for _ in range(3):
        started = await start_login(client, who.email)
        for _ in range(4):
            assert_error(await attempt(client, started["mfa_token"], code="000000"), 401)
        assert (
            await attempt(client, started["mfa_token"], code=who.code(clock))
        ).status_code == 200
        clock.advance(30)


async def test_the_step_up_is_throttled_per_user(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A stolen aal1 access token cannot guess codes at /mfa/challenge without limit."""
    user = await register(client)
    pair = await login(client, user["email"])
    await enrol_totp(client, clock, pair)
    for _ in range(10):
        wrong = await client.post("/mfa/challenge", json={"code": "000000"}, headers=bearer(pair))
        assert_error(wrong, 401, "invalid_code")

    refused = await client.post("/mfa/challenge", json={"code": "000000"}, headers=bearer(pair))

    assert_error(refused, 429, "too_many_attempts")


# -- one answer, after the same steps, for every kind of wrong --------------------------------


def wrong_answers(who: TotpUser, clock: FakeClock, used_code: str, replayed: str) -> dict[str, Any]:
    return {
        "a wrong code": {"code": totp.code_at(who.secret, totp.step_of(clock.now) + 5)},
        "a malformed code": {"code": "12ab5"},
        "a code two steps off": {"code": who.code(clock, -2)},
        "a replayed code": {"code": replayed},
        "an unknown recovery code": {"recovery_code": "00000-00000"},
        "a used recovery code": {"recovery_code": used_code},
        "a malformed recovery code": {"recovery_code": "not a code at all"},
    }


async def test_every_kind_of_wrong_gets_the_same_answer_after_the_same_steps(
    client: httpx.AsyncClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status, body and headers are identical, and the second step makes the same calls in
    the same order: count, read, open every secret, every TOTP candidate, the code's digest,
    the compare-and-set, the audit event. What differs is data, never the path."""
    who = await totp_user(client, clock)
    used_code = who.recovery_codes[0]
    started = await start_login(client, who.email)
    assert (await attempt(client, started["mfa_token"], recovery_code=used_code)).status_code == 200
    clock.advance(30)
    started = await start_login(client, who.email)
    replayed = who.code(clock)
    assert (await attempt(client, started["mfa_token"], code=replayed)).status_code == 200
    calls: list[str] = []

    def spy(owner: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)
        is_async = name in ("count_second_factor", "second_factor_state", "spend", "record")

        if is_async:

            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return await original(*args, **kwargs)

            monkeypatch.setattr(owner, name, traced_async)
        else:

            def traced(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return original(*args, **kwargs)

            monkeypatch.setattr(owner, name, traced)

    spy(throttle, "count_second_factor")
    spy(factors, "second_factor_state")
    spy(FactorKeys, "open")
    spy(totp, "matching_step")
    spy(FactorKeys, "code_digest")
    spy(factors, "spend")
    spy(audit, "record")
    answers: dict[str, tuple[int, bytes, list[tuple[str, str]]]] = {}
    paths: dict[str, list[str]] = {}
    mfa_token = (await start_login(client, who.email))["mfa_token"]

    for kind, answer in wrong_answers(who, clock, used_code, replayed).items():
        calls.clear()
        response = await attempt(client, mfa_token, **answer)
        headers = [h for h in response.headers.multi_items() if h[0] != "x-request-id"]
        answers[kind] = (response.status_code, response.content, sorted(headers))
        paths[kind] = list(calls)
        # A fresh token per kind, so the per-token limit never answers instead.
        mfa_token = (await start_login(client, who.email))["mfa_token"]

    assert len(set(map(repr, answers.values()))) == 1, answers
    assert answers["a wrong code"][0] == 401
    assert len({tuple(path) for path in paths.values()}) == 1, paths
    assert paths["a wrong code"] == [
        "count_second_factor",
        "second_factor_state",
        "open",
        "matching_step",
        "code_digest",
        "spend",
        "record",
    ]


async def test_the_mfa_token_and_codes_do_not_work_for_another_user(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A's mfa_token with B's valid code is refused: the code is checked against A's factors."""
    alice = await totp_user(client, clock)
    bob = await totp_user(client, clock)
    started = await start_login(client, alice.email)

    response = await attempt(client, started["mfa_token"], code=bob.code(clock))

    assert_error(response, 401, "invalid_code")
    assert (await mfa_login(client, clock, bob)).get("access_token")


async def test_one_code_raced_on_two_mfa_tokens_wins_once(
    client: httpx.AsyncClient, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Two logins racing with the same code (a phished code replayed at once): the factor's
    compare-and-set lets exactly one through."""
    who = await totp_user(client, clock)
    tokens = [(await start_login(client, who.email))["mfa_token"] for _ in range(4)]
    code = who.code(clock)

    answers = await asyncio.gather(*(attempt(client, token, code=code) for token in tokens))

    assert sorted(response.status_code for response in answers) == [200, 401, 401, 401]
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE acr = 'aal2'") == 1
