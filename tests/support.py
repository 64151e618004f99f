"""Plain test helpers: constants, the fake clock, the in-process app, and the async factories
that `conftest.py` hands to tests as fixtures (`register`, `login`, `register_and_login`,
`table_snapshot`, `serve`). A module-level helper of a test module calls them from here.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from tokenrota_server import app as app_module
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings
from tokenrota_server.db.pool import PoolKeeper
from tokenrota_server.passwords import Passwords

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
# The audience of the test instances' tokens, and of the resource servers the tests build: a
# URI, as a resource server's must be (tokenrota.resource).
TEST_AUDIENCE = "https://api.tokenrota.test"
PasswordsT = TypeVar("PasswordsT", bound=Passwords)


class FakeClock:
    """A clock the test moves by hand; starts at the real present, whole seconds."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# Where the apps of the tests here take their pool, warm from the test before on the same
# database, and give it back (tests/conftest.py installs the run's database supply).
_pools: list[PoolKeeper] = []


def keep_pools_in(keeper: PoolKeeper | None) -> None:
    """Have `running_app` take and give back its pool through `keeper` (None: stop)."""
    _pools[:] = [keeper] if keeper is not None else []


@contextlib.asynccontextmanager
async def running_app(settings: Settings, clock: Any) -> AsyncIterator[Any]:
    """The service as an ASGI callable with its lifespan running.

    The wrapper hands each request a copy of the lifespan's state, as uvicorn does.
    """
    app = create_app(settings, clock=clock, pools=_pools[0] if _pools else None)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        yield with_state


@contextlib.asynccontextmanager
async def serve(settings: Settings, clock: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app for `settings`, its lifespan running, behind an httpx client (in process)."""
    async with running_app(settings, clock) as app:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@contextlib.asynccontextmanager
async def serve_with_passwords(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    clock: Any,
    passwords_class: type[PasswordsT],
) -> AsyncIterator[tuple[httpx.AsyncClient, PasswordsT]]:
    """`serve(settings, clock)` with the app's Passwords made by `passwords_class` (a subclass
    that records or holds argon2 work); yields the client and the one instance the app made."""
    made: list[PasswordsT] = []

    def make(settings: Settings) -> PasswordsT:
        passwords = passwords_class(settings)
        made.append(passwords)
        return passwords

    monkeypatch.setattr(app_module, "Passwords", make)
    async with serve(settings, clock) as client:
        (passwords,) = made
        yield client, passwords


async def register(
    client: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    """Register a user (a fresh email by default); return the `user` object."""
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post("/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """Log in; return the token pair."""
    response = await client.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def register_and_login(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new user and a token pair of a fresh session."""
    user = await register(client)
    return user, await login(client, user["email"])


async def table_snapshot(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables that bad input must leave alone, to compare before and after."""
    snapshot = {}
    for table in ("users", "sessions", "refresh_tokens"):
        rows = await db.fetch(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608
        snapshot[table] = [tuple(row) for row in rows]
    return snapshot


# The types of the fixtures that hand these out, for the tests' signatures.
Serve = Callable[[Settings, Any], AbstractAsyncContextManager[httpx.AsyncClient]]
Register = Callable[..., Awaitable[dict[str, Any]]]
Login = Callable[..., Awaitable[dict[str, Any]]]
RegisterAndLogin = Callable[[httpx.AsyncClient], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]
TableSnapshot = Callable[[asyncpg.Connection], Awaitable[dict[str, list[tuple[Any, ...]]]]]
CreateClient = Callable[..., Awaitable[tuple[str, str]]]
