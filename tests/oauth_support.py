"""Helpers for the OAuth tests: registering clients, asking for tokens, reading JWTs, and putting
resource servers beside the service. `create_client` is also the `create_client` fixture."""

from __future__ import annotations

import base64
import collections
import json
from typing import Any
from urllib.parse import quote_plus

import asyncpg
import httpx
from argon2 import PasswordHasher
from tokenrota_server.config import Settings
from tokenrota_server.db import oauth_clients

# Re-exported: test modules import it from here, beside `Dispatcher`.
from tests.support import running_app

__all__ = [
    "Dispatcher",
    "FakeMonotonic",
    "basic",
    "claims_of",
    "client_token",
    "create_client",
    "header_of",
    "running_app",
]


# The scope an operator grants a client that follows the revocation feed.
FEED_SCOPE = "revocations:read"


async def create_client(
    db: asyncpg.Connection, settings: Settings, scope: str = "read write", name: str = "svc"
) -> tuple[str, str]:
    """Register a client straight in the database (as the CLI would); return (id, secret)."""
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
    )
    client_id, secret = oauth_clients.new_client_id(), oauth_clients.new_client_secret()
    await db.execute(
        "INSERT INTO clients (client_id, name, secret_hash, scopes) VALUES ($1, $2, $3, $4)",
        client_id,
        name,
        hasher.hash(secret),
        scope.split() if scope else [],
    )
    return client_id, secret


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An RFC 6749 §2.3.1 Basic header: each half form-urlencoded, then base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def client_token(
    client: httpx.AsyncClient, client_id: str, secret: str, **form: str
) -> httpx.Response:
    """POST /oauth/token with grant_type=client_credentials and Basic auth."""
    return await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", **form},
        headers=basic(client_id, secret),
    )


def claims_of(token: str) -> dict[str, Any]:
    """The unverified payload of a JWT, for looking at what was minted."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def header_of(token: str) -> dict[str, Any]:
    """The unverified header of a JWT."""
    part = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


class Dispatcher:
    """One ASGI app in front of several, by path prefix, counting each path it sees."""

    def __init__(self, default: Any, **prefixed: Any) -> None:
        self._default = default
        self._prefixed = {"/" + name: app for name, app in prefixed.items()}
        self.counts: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.counts[scope["path"]] += 1
            for prefix, app in self._prefixed.items():
                if scope["path"].startswith(prefix + "/"):
                    await app(scope, receive, send)
                    return
        await self._default(scope, receive, send)


class FakeMonotonic:
    """A monotonic clock moved by hand, for caches and renewal."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
