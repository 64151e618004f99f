"""Session policy: SESSION_IDLE_TIMEOUT, MAX_SESSIONS_PER_USER, `remember: false` short sessions
and session names, each at its edges, with the clock moved by hand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server import session_policy
from tokenrota_server.config import Settings

from tests.http.test_cookies import GOOD, SECURE_NAME, post_with_cookie, set_cookie
from tests.support import PASSWORD, FakeClock, register, serve

IDLE = 300


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def login(client: httpx.AsyncClient, email: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/login", json={"email": email, "password": PASSWORD, **extra})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


@pytest.fixture
async def idle_client(make_settings: Any, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """The service with SESSION_IDLE_TIMEOUT=300."""
    async with serve(make_settings(session_idle_timeout=IDLE), clock) as client:
        yield client


async def test_a_session_idle_for_the_timeout_ends_at_profile_and_refresh(
    idle_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """299 s after the last refresh the session lives (and a refresh restarts the count);
    300 s after it, /profile and /refresh refuse it."""
    user = await register(idle_client)
    pair = await login(idle_client, user["email"])

    clock.advance(IDLE - 1)
    still = await idle_client.get("/profile", headers=bearer(pair))
    refreshed = await idle_client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    clock.advance(IDLE - 1)
    after_refresh = await idle_client.get("/profile", headers=bearer(refreshed.json()))
    clock.advance(1)
    ended_profile = await idle_client.get("/profile", headers=bearer(refreshed.json()))
    ended_refresh = await idle_client.post(
        "/refresh", json={"refresh_token": refreshed.json()["refresh_token"]}
    )

    assert still.status_code == 200
    assert refreshed.status_code == 200
    assert after_refresh.status_code == 200
    assert ended_profile.status_code == 403
    assert ended_refresh.status_code == 403


async def test_the_idle_sweep_revokes_with_reason_idle_into_the_feed(
    idle_client: httpx.AsyncClient,
    db: asyncpg.Connection,
    make_settings: Any,
    clock: FakeClock,
    database_url: str,
) -> None:
    """The sweep leaves a session used 299 s ago, and revokes one idle for 300 s with reason
    `idle`, which puts it in the revocation feed."""
    settings: Settings = make_settings(session_idle_timeout=IDLE)
    user = await register(idle_client)
    await login(idle_client, user["email"])
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        clock.advance(IDLE - 1)
        early = await session_policy.sweep_idle_sessions(pool, settings, clock())
        clock.advance(1)
        due = await session_policy.sweep_idle_sessions(pool, settings, clock())
    finally:
        await pool.close()

    assert (early, due) == (0, 1)
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "idle"
    assert await db.fetchval("SELECT count(*) FROM revocations") == 1


def test_the_sweep_runs_often_enough_for_the_timeout(make_settings: Any) -> None:
    """A quarter of the timeout, between 1 and 60 s."""
    assert session_policy.idle_sweep_interval(make_settings(session_idle_timeout=2)) == 1
    assert session_policy.idle_sweep_interval(make_settings(session_idle_timeout=300)) == 60
    assert session_policy.idle_sweep_interval(make_settings(session_idle_timeout=100)) == 25


async def test_the_session_cap_evicts_the_least_recently_used(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """MAX_SESSIONS_PER_USER=2: the second login evicts nothing; the third revokes the session
    used least recently (not the oldest) with reason `session_limit`."""
    async with serve(make_settings(max_sessions_per_user=2), clock) as client:
        user = await register(client)
        oldest = await login(client, user["email"])
        clock.advance(10)
        middle = await login(client, user["email"])
        clock.advance(10)
        refreshed = await client.post("/refresh", json={"refresh_token": oldest["refresh_token"]})
        live_at_cap = await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL")
        clock.advance(10)
        await login(client, user["email"])
        evicted = await client.get("/profile", headers=bearer(middle))
        kept = await client.get("/profile", headers=bearer(refreshed.json()))

    assert live_at_cap == 2
    assert evicted.status_code == 403
    assert kept.status_code == 200
    reasons = await db.fetch("SELECT revoke_reason FROM sessions WHERE revoked_at IS NOT NULL")
    assert [row["revoke_reason"] for row in reasons] == ["session_limit"]


async def test_the_session_cap_evicts_the_oldest_of_sessions_used_in_the_same_second(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Three logins at one (whole-second) time with a cap of 2: every `last_used_at` and
    `created_at` ties, and the first login's session is the one revoked, every time."""
    async with serve(make_settings(max_sessions_per_user=2), clock) as client:
        user = await register(client)
        pairs = [await login(client, user["email"]) for _ in range(3)]
        answers = [await client.get("/profile", headers=bearer(pair)) for pair in pairs]

    assert [answer.status_code for answer in answers] == [403, 200, 200]
    assert await db.fetchval("SELECT count(DISTINCT last_used_at) FROM sessions") == 1


async def test_concurrent_logins_never_exceed_the_cap(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """Eight logins of one user at once with a cap of 3: exactly 3 sessions stay live."""
    async with serve(make_settings(max_sessions_per_user=3), clock) as client:
        user = await register(client)

        answers = await asyncio.gather(
            *(
                client.post("/login", json={"email": user["email"], "password": PASSWORD})
                for _ in range(8)
            )
        )

    assert [answer.status_code for answer in answers] == [200] * 8
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 3
    assert await db.fetchval("SELECT count(*) FROM revocations") == 5


async def test_remember_false_makes_a_short_session_with_a_browser_session_cookie(
    make_settings: Any, clock: FakeClock, db: asyncpg.Connection
) -> None:
    """`remember: false`: the session ends after SESSION_SHORT_MAX_AGE, and its cookie (also
    after a refresh) has neither Max-Age nor Expires; the default keeps Max-Age."""
    settings = make_settings(allowed_origins=(GOOD["Origin"],))
    async with serve(settings, clock) as client:
        user = await register(client)
        remembered = await client.post(
            "/login", json={"email": user["email"], "password": PASSWORD, "use_cookie": True}
        )
        short = await client.post(
            "/login",
            json={
                "email": user["email"],
                "password": PASSWORD,
                "use_cookie": True,
                "remember": False,
            },
        )
        client.cookies.clear()
        _, token, attributes = set_cookie(short)
        clock.advance(settings.session_short_max_age - 1)
        refreshed = await post_with_cookie(client, "/refresh", token)
        _, child, refreshed_attributes = set_cookie(refreshed)
        clock.advance(1)
        ended = await post_with_cookie(client, "/refresh", child)

    assert "max-age" in set_cookie(remembered)[2]
    assert "max-age" not in attributes
    assert "expires" not in attributes
    assert refreshed.status_code == 200
    assert "max-age" not in refreshed_attributes
    assert "expires" not in refreshed_attributes
    assert ended.status_code == 403
    assert sorted(await db.fetchval("SELECT array_agg(remember) FROM sessions")) == [False, True]
    assert set_cookie(refreshed)[0] == SECURE_NAME


async def test_remember_must_be_a_boolean(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user = await register(client)

    response = await client.post(
        "/login", json={"email": user["email"], "password": PASSWORD, "remember": "no"}
    )

    assert (response.status_code, response.json()["error"]) == (422, "invalid_input")
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_a_session_can_be_named_and_the_name_is_listed(client: httpx.AsyncClient) -> None:
    """PATCH /sessions/{id} {"name"}: 200; GET /sessions lists it; null clears it."""
    user = await register(client)
    pair = await login(client, user["email"])
    sid = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"][0]["id"]

    named = await client.patch(
        f"/sessions/{sid}", json={"name": "  Work laptop "}, headers=bearer(pair)
    )
    listed = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"]
    cleared = await client.patch(f"/sessions/{sid}", json={"name": None}, headers=bearer(pair))
    relisted = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"]

    assert named.status_code == 200
    assert named.json() == {"id": sid, "name": "Work laptop"}
    assert listed[0]["name"] == "Work laptop"
    assert cleared.status_code == 200
    assert relisted[0]["name"] is None


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\there", 42])
async def test_a_bad_name_is_422_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, name: Any
) -> None:
    user = await register(client)
    pair = await login(client, user["email"])
    sid = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"][0]["id"]

    response = await client.patch(f"/sessions/{sid}", json={"name": name}, headers=bearer(pair))

    assert (response.status_code, response.json()["error"]) == (422, "invalid_input")
    assert await db.fetchval("SELECT name FROM sessions") is None


@pytest.mark.parametrize(
    "body",
    [{}, {"name": "laptop", "label": "x"}, {"nmae": "laptop"}],
    ids=["none", "extra", "typo"],
)
async def test_a_rename_with_a_missing_or_unknown_field_is_422_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: dict[str, Any]
) -> None:
    """The one field is `name`: a typo or an extra field is refused, not ignored."""
    user = await register(client)
    pair = await login(client, user["email"])
    sid = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"][0]["id"]
    await client.patch(f"/sessions/{sid}", json={"name": "desk"}, headers=bearer(pair))

    response = await client.patch(f"/sessions/{sid}", json=body, headers=bearer(pair))

    assert (response.status_code, response.json()["error"]) == (422, "invalid_input")
    assert await db.fetchval("SELECT name FROM sessions") == "desk"


@pytest.mark.parametrize("body", [b"{", b'{"name": 42}', b'{"name": "x", "other": 1}'])
async def test_a_rename_checks_the_token_before_the_body(
    client: httpx.AsyncClient, body: bytes
) -> None:
    """A bad token with a bad body is refused for the token: the body is never read."""
    response = await client.patch(
        f"/sessions/{uuid.uuid4()}",
        content=body,
        headers={"Authorization": "Bearer not.a.token", "Content-Type": "application/json"},
    )

    assert (response.status_code, response.json()["error"]) == (403, "invalid_token")


async def test_a_name_of_100_characters_is_accepted(client: httpx.AsyncClient) -> None:
    user = await register(client)
    pair = await login(client, user["email"])
    sid = (await client.get("/sessions", headers=bearer(pair))).json()["sessions"][0]["id"]

    response = await client.patch(
        f"/sessions/{sid}", json={"name": "é" * 100}, headers=bearer(pair)
    )

    assert response.status_code == 200


async def test_another_users_session_cannot_be_named(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Someone else's session, an unknown id, a malformed id: the same 404."""
    mine = await login(client, (await register(client))["email"])
    theirs = await login(client, (await register(client))["email"])
    their_sid = (await client.get("/sessions", headers=bearer(theirs))).json()["sessions"][0]["id"]

    answers = [
        await client.patch(f"/sessions/{target}", json={"name": "mine"}, headers=bearer(mine))
        for target in (their_sid, str(uuid.uuid4()), "not-a-uuid")
    ]

    assert [(a.status_code, a.json()["error"]) for a in answers] == [(404, "not_found")] * 3
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE name IS NOT NULL") == 0
