"""/refresh: rotation, the grace window, reuse detection, and races, on a real Postgres."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from tests.support import FakeClock, Login, Register, RegisterAndLogin, Serve, TableSnapshot


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/refresh", json={"refresh_token": token})


async def test_rotation_chain_spends_each_token_and_stays_in_one_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    clock: FakeClock,
    register_and_login: RegisterAndLogin,
) -> None:
    """Each refresh returns a new refresh token of the same session and spends the old one."""
    _, pair = await register_and_login(client)
    tokens = [pair["refresh_token"]]

    for _ in range(5):
        clock.advance(60)
        response = await refresh(client, tokens[-1])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        assert response.headers["cache-control"] == "no-store"
        tokens.append(body["refresh_token"])

    assert len(set(tokens)) == 6
    rows = await db.fetch(
        "SELECT session_id, parent_id, id, used_at FROM refresh_tokens ORDER BY id"
    )
    assert len(rows) == 6
    assert len({row["session_id"] for row in rows}) == 1
    assert [row["parent_id"] for row in rows[1:]] == [row["id"] for row in rows[:-1]]
    assert all(row["used_at"] is not None for row in rows[:-1])
    assert rows[-1]["used_at"] is None


async def test_new_access_token_works_at_profile(
    client: httpx.AsyncClient, register_and_login: RegisterAndLogin
) -> None:
    """The access token of a refreshed pair is accepted where the old one was."""
    user, pair = await register_and_login(client)

    body = (await refresh(client, pair["refresh_token"])).json()
    response = await client.get(
        "/profile", headers={"Authorization": f"Bearer {body['access_token']}"}
    )

    assert response.status_code == 200
    assert response.json()["user"]["id"] == user["id"]


async def test_grace_window_returns_the_same_child_byte_for_byte(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    clock: FakeClock,
    register_and_login: RegisterAndLogin,
) -> None:
    """A spent token presented again within the reuse interval gets the very same child."""
    _, pair = await register_and_login(client)
    first = (await refresh(client, pair["refresh_token"])).json()

    clock.advance(9)
    again = await refresh(client, pair["refresh_token"])

    assert again.status_code == 200
    assert again.json()["refresh_token"] == first["refresh_token"]
    assert again.json()["access_token"] != first["access_token"]
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 2
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 1


async def test_replay_after_the_window_revokes_the_whole_session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    clock: FakeClock,
    register_and_login: RegisterAndLogin,
) -> None:
    """A spent token after the reuse interval is theft: 403, and the newest token dies too."""
    _, pair = await register_and_login(client)
    child = (await refresh(client, pair["refresh_token"])).json()

    clock.advance(11)
    replay = await refresh(client, pair["refresh_token"])

    assert replay.status_code == 403
    assert replay.json()["error"] == "invalid_token"
    reason = await db.fetchval("SELECT revoke_reason FROM sessions")
    assert reason == "reuse_detected"
    assert (await refresh(client, child["refresh_token"])).status_code == 403
    profile = await client.get(
        "/profile", headers={"Authorization": f"Bearer {child['access_token']}"}
    )
    assert profile.status_code == 403


async def test_replay_once_the_child_was_used_revokes_even_within_the_window(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    clock: FakeClock,
    register_and_login: RegisterAndLogin,
) -> None:
    """Grace covers a lost answer, not a token whose child is already in use."""
    _, pair = await register_and_login(client)
    child = (await refresh(client, pair["refresh_token"])).json()
    grandchild = await refresh(client, child["refresh_token"])
    assert grandchild.status_code == 200

    clock.advance(1)
    replay = await refresh(client, pair["refresh_token"])

    assert replay.status_code == 403
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "reuse_detected"
    assert (await refresh(client, grandchild.json()["refresh_token"])).status_code == 403


async def test_replay_revokes_only_that_session(
    client: httpx.AsyncClient, clock: FakeClock, login: Login, register: Register
) -> None:
    """Another login of the same user keeps working after one session is revoked for reuse."""
    user = await register(client)
    stolen = await login(client, user["email"])
    other = await login(client, user["email"])
    await refresh(client, stolen["refresh_token"])

    clock.advance(30)
    assert (await refresh(client, stolen["refresh_token"])).status_code == 403

    assert (await refresh(client, other["refresh_token"])).status_code == 200


async def test_fifty_concurrent_refreshes_create_exactly_one_child(
    client: httpx.AsyncClient, db: asyncpg.Connection, register_and_login: RegisterAndLogin
) -> None:
    """Racing requests with one token: one child row; every 200 carries that same child."""
    _, pair = await register_and_login(client)

    responses = await asyncio.gather(*(refresh(client, pair["refresh_token"]) for _ in range(50)))

    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE parent_id IS NOT NULL") == 1
    statuses = {response.status_code for response in responses}
    assert statuses <= {200, 403}
    children = {
        response.json()["refresh_token"] for response in responses if response.status_code == 200
    }
    assert len(children) == 1
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 1


async def test_concurrent_refreshes_across_two_instances_create_one_child(
    settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """Two app instances (two pools) on one database still let exactly one request win."""
    async with serve(settings, clock) as first, serve(settings, clock) as second:
        _, pair = await register_and_login(first)
        token = pair["refresh_token"]

        responses = await asyncio.gather(
            *(refresh(client, token) for client in [first, second] * 10)
        )

    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE parent_id IS NOT NULL") == 1
    children = {r.json()["refresh_token"] for r in responses if r.status_code == 200}
    assert len(children) == 1


async def test_logout_then_refresh_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, register_and_login: RegisterAndLogin
) -> None:
    """After logout the session is revoked, and its refresh token gets 403."""
    _, pair = await register_and_login(client)

    response = await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 204
    again = await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 204

    assert (await refresh(client, pair["refresh_token"])).status_code == 403
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "logout"


async def test_without_rotation_the_same_refresh_token_comes_back(
    make_settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    register_and_login: RegisterAndLogin,
    serve: Serve,
    table_snapshot: TableSnapshot,
) -> None:
    """ROTATE_REFRESH_TOKENS=false: a new access token, the same refresh token, no new row."""
    async with serve(make_settings(rotate_refresh_tokens=False), clock) as client:
        _, pair = await register_and_login(client)
        before = await table_snapshot(db)

        for _ in range(3):
            clock.advance(60)
            response = await refresh(client, pair["refresh_token"])
            assert response.status_code == 200
            assert response.json()["refresh_token"] == pair["refresh_token"]

    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == len(before["refresh_tokens"])


async def test_without_rotation_a_token_spent_earlier_is_reuse(
    make_settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """Rotation turned off after a token was spent: replaying it revokes the session."""
    async with serve(make_settings(), clock) as rotating:
        _, pair = await register_and_login(rotating)
        child = (await refresh(rotating, pair["refresh_token"])).json()

    clock.advance(60)
    async with serve(make_settings(rotate_refresh_tokens=False), clock) as client:
        replay = await refresh(client, pair["refresh_token"])
        again = await refresh(client, child["refresh_token"])

    assert replay.status_code == 403
    assert replay.json()["error"] == "invalid_token"
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "reuse_detected"
    assert again.status_code == 403


async def test_mixed_fleet_token_rotated_at_one_and_replayed_at_the_other_is_reuse(
    make_settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """A rollout: A rotates, B does not. A token spent at A is theft at B, as it is at A."""
    caplog.set_level(logging.INFO, logger="tokenrota")
    reuse_counted = ("token_service_refreshes_total", {"outcome": "reuse_detected"})
    before = REGISTRY.get_sample_value(*reuse_counted) or 0.0
    async with (
        serve(make_settings(rotate_refresh_tokens=True), clock) as a,
        serve(make_settings(rotate_refresh_tokens=False), clock) as b,
    ):
        user, pair = await register_and_login(a)
        child = (await refresh(a, pair["refresh_token"])).json()

        clock.advance(60)
        replay = await refresh(b, pair["refresh_token"])
        child_at_b = await refresh(b, child["refresh_token"])
        child_at_a = await refresh(a, child["refresh_token"])

    assert replay.status_code == 403
    assert replay.json()["error"] == "invalid_token"
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "reuse_detected"
    assert [child_at_b.status_code, child_at_a.status_code] == [403, 403]
    assert (REGISTRY.get_sample_value(*reuse_counted) or 0.0) - before == 1
    events = [r for r in caplog.records if r.name == "tokenrota.security" and "reuse" in r.msg]
    assert [str(getattr(event, "user_id", None)) for event in events] == [user["id"]]


async def test_mixed_fleet_token_used_unrotated_stays_usable_and_then_rotates(
    make_settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """B keeps a token unspent; A then rotates it, and after that B refuses it as reuse."""
    async with (
        serve(make_settings(rotate_refresh_tokens=True), clock) as a,
        serve(make_settings(rotate_refresh_tokens=False), clock) as b,
    ):
        _, pair = await register_and_login(a)
        token = pair["refresh_token"]
        kept = [await refresh(b, token) for _ in range(2)]
        rotated = await refresh(a, token)
        child = rotated.json()["refresh_token"]
        at_b = await refresh(b, child)

        clock.advance(60)
        replay = await refresh(b, token)

    assert [response.status_code for response in kept] == [200, 200]
    assert {response.json()["refresh_token"] for response in kept} == {token}
    assert rotated.status_code == 200
    assert child != token
    assert at_b.status_code == 200
    assert at_b.json()["refresh_token"] == child
    assert replay.status_code == 403
    assert await db.fetchval("SELECT revoke_reason FROM sessions") == "reuse_detected"


async def test_mixed_fleet_a_retry_within_the_window_gets_the_same_child_at_either(
    make_settings,
    clock: FakeClock,
    db: asyncpg.Connection,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """A lost answer from A retried at B within the reuse interval continues the chain."""
    async with (
        serve(make_settings(rotate_refresh_tokens=True), clock) as a,
        serve(make_settings(rotate_refresh_tokens=False), clock) as b,
    ):
        _, pair = await register_and_login(a)
        first = (await refresh(a, pair["refresh_token"])).json()

        clock.advance(5)
        retry = await refresh(b, pair["refresh_token"])

    assert retry.status_code == 200
    assert retry.json()["refresh_token"] == first["refresh_token"]
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 1
