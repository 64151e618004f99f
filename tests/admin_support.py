"""Helpers for the admin API's tests: an admin client's bearer header, and users inserted
straight into the database by the thousand."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
from tokenrota_server.config import Settings

from tests.oauth_support import client_token, create_client


async def admin_client(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, scope: str = "admin"
) -> tuple[str, dict[str, str]]:
    """A new client with `scope` and the bearer header of a client-credentials token of it."""
    client_id, secret = await create_client(db, settings, scope=scope, name="ops")
    response = await client_token(client, client_id, secret)
    assert response.status_code == 200, response.text
    return client_id, {"Authorization": f"Bearer {response.json()['access_token']}"}


async def insert_users(db: asyncpg.Connection, count: int, prefix: str = "bulk") -> list[Any]:
    """`count` users `{prefix}-{n}@example.com` with an unusable password hash; their ids."""
    rows = await db.fetch(
        "INSERT INTO users (email, password_hash)"
        " SELECT $1 || '-' || n || '@example.com', 'x' FROM generate_series(1, $2) AS n"
        " RETURNING id",
        prefix,
        count,
    )
    return [row["id"] for row in rows]


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    """The Authorization header of a token pair's access token."""
    return {"Authorization": f"Bearer {pair['access_token']}"}
