"""Fixtures: a real Postgres, a migrated template database, and one clone of it per test.

The server is `TEST_DATABASE_URL` when set, else the embedded Postgres under `.data/test/`.
The template is migrated once per run (synchronously: alembic's env.py runs its own event loop);
each test gets `CREATE DATABASE ... TEMPLATE`, a real and isolated database in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.datastructures import Secret
from tokenrota.testing import database_url_for, execute
from tokenrota_server import schema
from tokenrota_server.app import create_app
from tokenrota_server.config import Settings
from tokenrota_server.database import start_embedded

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


class FakeClock:
    """A clock the test moves by hand; starts at the real present, whole seconds."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a real Postgres server's maintenance database."""
    if os.environ.get("TEST_DATABASE_URL"):
        return os.environ["TEST_DATABASE_URL"]
    url = start_embedded(PROJECT_ROOT / ".data" / "test")
    # Our own throwaway server: without fsync, DROP DATABASE after each test takes ~20 ms
    # instead of ~600 ms. Never done to a TEST_DATABASE_URL server, which may matter to someone.
    asyncio.run(execute(url, "ALTER SYSTEM SET fsync = off", "SELECT pg_reload_conf()"))
    return url


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """A database migrated to head, to be cloned by each test."""
    name = f"template_{os.getpid()}"
    asyncio.run(
        execute(
            postgres_url,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}"',
        )
    )
    schema.upgrade(database_url_for(postgres_url, name))
    yield name
    asyncio.run(execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh database of this test's own, at the schema's head."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    await execute(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield database_url_for(postgres_url, name)
    await execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, for arranging and checking rows."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def clock() -> FakeClock:
    """The clock the app under test reads."""
    return FakeClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Test settings: fresh random secrets, and argon2 cheap enough for hundreds of logins."""
    return Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        env="test",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        argon2_parallelism=1,
        # Many tests log in far more often than a person would; tests/test_throttle.py sets
        # real limits where it tests the throttle itself.
        login_email_max_attempts=10_000,
        login_ip_max_attempts=10_000,
    )


@contextlib.asynccontextmanager
async def serve(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """The app for `settings`, its lifespan running, behind an httpx client (in process).

    The wrapper hands each request a copy of the lifespan's state, as uvicorn does.
    """
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def client(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the service on the test's database."""
    async with serve(settings, clock) as client:
        yield client


@pytest.fixture
def make_settings(settings: Settings) -> Any:
    """Build variants of the test settings: `make_settings(refresh_reuse_interval=0)`."""
    return lambda **changes: replace(settings, **changes)


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
