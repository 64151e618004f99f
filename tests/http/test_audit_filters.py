"""The audit log's filters (actor, action, after, before): what each admits, paging within
them, and the 422 of each bad value, with their edges."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.admin_support import admin_client
from tests.support import FakeClock, register

# Seconds between the seeded events: three steps stay within the admin token's lifetime.
STEP = 240


async def seed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """An admin client, a user, and five events STEP apart: put, disable, enable, put, the
    CLI's disable."""
    admin_id, admin = await admin_client(client, db, settings)
    user = await register(client)
    await client.put("/admin/roles/a", json={"scopes": []}, headers=admin)
    clock.advance(STEP)
    await client.post(f"/admin/users/{user['id']}/disable", headers=admin)
    clock.advance(STEP)
    await client.post(f"/admin/users/{user['id']}/enable", headers=admin)
    clock.advance(STEP)
    await client.put("/admin/roles/b", json={"scopes": []}, headers=admin)
    await db.execute(
        "INSERT INTO audit_events (at, actor, action, target, user_id)"
        " VALUES ($1, 'cli', 'user_disabled', $2, $3)",
        clock() + timedelta(seconds=1),
        user["id"],
        uuid.UUID(user["id"]),
    )
    return admin_id, admin, user


async def listed(client: httpx.AsyncClient, admin: dict[str, str], query: str) -> list[str]:
    response = await client.get(f"/admin/audit?{query}", headers=admin)
    assert response.status_code == 200, response.text
    return [f"{event['actor']} {event['action']}" for event in response.json()["events"]]


async def test_each_filter_admits_exactly_its_events(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    admin_id, admin, user = await seed(client, db, settings, clock)
    me = f"client:{admin_id}"
    start = clock() - 3 * timedelta(seconds=STEP)
    second = (start + timedelta(seconds=STEP)).isoformat().replace("+00:00", "Z")
    third = (start + timedelta(seconds=2 * STEP)).isoformat().replace("+00:00", "%2B00:00")

    assert await listed(client, admin, "actor=cli") == ["cli user_disabled"]
    assert await listed(client, admin, "action=user_disabled") == [
        "cli user_disabled",
        f"{me} user_disabled",
    ]
    assert await listed(client, admin, f"actor={me}&action=user_disabled") == [
        f"{me} user_disabled"
    ]
    assert await listed(client, admin, f"after={second}&before={third}") == [f"{me} user_disabled"]
    assert await listed(client, admin, f"after={third}&actor={me}") == [
        f"{me} role_put",
        f"{me} user_enabled",
    ]
    assert await listed(client, admin, f"user_id={user['id']}&actor={me}") == [
        f"{me} user_enabled",
        f"{me} user_disabled",
    ]
    assert await listed(client, admin, f"after={third}&before={second}") == []


async def test_a_filtered_listing_pages_and_its_cursor_is_bound_to_its_filters(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    admin_id, admin, _ = await seed(client, db, settings, clock)
    query = f"actor=client:{admin_id}&limit=2"

    first = await client.get(f"/admin/audit?{query}", headers=admin)
    cursor = first.json()["next_cursor"]
    second = await client.get(f"/admin/audit?{query}&cursor={cursor}", headers=admin)
    elsewhere = await client.get(f"/admin/audit?actor=cli&cursor={cursor}", headers=admin)
    unfiltered = await client.get(f"/admin/audit?cursor={cursor}", headers=admin)

    actions = [e["action"] for e in first.json()["events"] + second.json()["events"]]
    assert actions == ["role_put", "user_enabled", "user_disabled", "role_put"]
    assert second.json()["next_cursor"] is None
    assert (elsewhere.status_code, unfiltered.status_code) == (400, 400)


@pytest.mark.parametrize(
    "query",
    [
        "action=nothing_like_it",
        "action=USER_DISABLED",
        "action=",
        "actor=",
        "actor=" + "a" * 201,
        "actor=line%0Abreak",
        "after=2026-12-07T04:00:00",
        "after=2026-12-07",
        "after=yesterday",
        "before=2026-12-07T04:00:00+00:00",
        "before=0001-01-01T00:00:00%2B14:00",
        "before=10000-01-01T00:00:00Z",
        "after=2026-13-01T00:00:00Z",
        "after=" + "2" * 41,
        "after=\uff12\uff10\uff12\uff16-12-07T04:00:00Z",  # full-width digits
        "action=user_disabled&action=user_enabled",
        "user_id=42",
    ],
)
async def test_a_bad_filter_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, query: str
) -> None:
    _, admin = await admin_client(client, db, settings)

    response = await client.get(f"/admin/audit?{query}", headers=admin)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"


@pytest.mark.parametrize(
    "query",
    [
        "actor=" + "a" * 200,
        "after=0001-01-01T00:00:00Z",
        "before=9999-12-31T23:59:59.999999%2B00:00",
        "after=2026-12-07T04:00:00-05:30",
    ],
)
async def test_filters_at_their_edges_are_taken(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, query: str
) -> None:
    _, admin = await admin_client(client, db, settings)

    response = await client.get(f"/admin/audit?{query}", headers=admin)

    assert response.status_code == 200, response.text
