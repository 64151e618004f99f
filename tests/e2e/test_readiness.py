"""/readyz and 503s while the database is away, and recovery when it returns, for real.

The outage is a second embedded Postgres (its own data directory) that these tests stop and
start with pg_ctl, so the service sees what it would in production: a socket that is gone,
connections cut by a shutdown, and a server that comes back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
from tokenrota.testing import database_url_for, execute
from tokenrota_server.config import Settings
from tokenrota_server.db import schema

from tests.outage import ControlledPostgres
from tests.support import PASSWORD, FakeClock, Serve

# Ends the sessions of the database it runs in but its own.
END_OTHER_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def wait_until_ready(client: httpx.AsyncClient, seconds: float = 15) -> httpx.Response:
    """Poll /readyz until it answers 200 (the last answer when time runs out)."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get("/readyz")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.1)


async def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert set(response.json()) == {"error", "error_description"}
    # A client (or a proxy) learns when to ask again.
    assert response.headers["Retry-After"] == "1"


async def test_starts_without_the_database_serves_503_and_recovers(
    outage_postgres: ControlledPostgres,
    outage_database: str,
    settings: Settings,
    clock: FakeClock,
    serve: Serve,
) -> None:
    """Down at startup: alive but not ready, 503 for work; back: ready, and it works."""
    await asyncio.to_thread(outage_postgres.stop)

    async with serve(replace(settings, database_url=outage_database), clock) as client:
        alive = await client.get("/healthz")
        await assert_unavailable(await client.get("/readyz"))
        await assert_unavailable(
            await client.post("/register", json={"email": "a@example.com", "password": PASSWORD})
        )
        await asyncio.to_thread(outage_postgres.start)
        ready = await wait_until_ready(client)
        registered = await client.post(
            "/register", json={"email": "a@example.com", "password": PASSWORD}
        )

    assert alive.status_code == 200
    assert ready.status_code == 200
    assert registered.status_code == 201


async def test_an_outage_while_serving_gives_503_then_recovers(
    outage_postgres: ControlledPostgres,
    outage_database: str,
    settings: Settings,
    clock: FakeClock,
    serve: Serve,
) -> None:
    """Connections cut by a shutdown become 503s, never 500s; after restart, logins work."""
    async with serve(replace(settings, database_url=outage_database), clock) as client:
        credentials = {"email": "b@example.com", "password": PASSWORD}
        assert (await client.post("/register", json=credentials)).status_code == 201
        pair = (await client.post("/login", json=credentials)).json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}

        await asyncio.to_thread(outage_postgres.stop)
        during = [
            await client.post("/login", json=credentials),
            await client.get("/profile", headers=bearer),
            await client.post("/refresh", json={"refresh_token": pair["refresh_token"]}),
            await client.get("/readyz"),
        ]
        await asyncio.to_thread(outage_postgres.start)
        ready = await wait_until_ready(client)
        # The pool may still hold a connection the restart cut: at worst one more 503.
        after = [(await client.get("/profile", headers=bearer)).status_code for _ in range(3)]
        login = await client.post("/login", json=credentials)

    for response in during:
        await assert_unavailable(response)
    assert ready.status_code == 200
    assert after[-1] == 200
    assert set(after) <= {200, 503}
    assert login.status_code == 200


async def test_not_ready_until_migrated_to_head(
    postgres_url: str, settings: Settings, clock: FakeClock, serve: Serve
) -> None:
    """A database at an older revision, or none, is not ready; at head it is."""
    name = f"behind_{uuid.uuid4().hex[:12]}"
    await execute(postgres_url, f'CREATE DATABASE "{name}"')
    url = database_url_for(postgres_url, name)
    try:
        async with serve(replace(settings, database_url=url), clock) as client:
            empty = await client.get("/readyz")
            await asyncio.to_thread(schema.upgrade, url, "0001")
            behind = await client.get("/readyz")
            await asyncio.to_thread(schema.upgrade, url)
            current = await client.get("/readyz")
    finally:
        await execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    await assert_unavailable(empty)
    await assert_unavailable(behind)
    assert current.status_code == 200
    assert current.json()["revision"] == schema.head_revision()


async def test_a_server_turned_read_only_answers_503_not_500(
    outage_postgres: ControlledPostgres,
    outage_database: str,
    settings: Settings,
    clock: FakeClock,
    serve: Serve,
) -> None:
    """A server that refuses writes (a demoted primary, a fenced one) is a database away, not
    a bug: 503 with Retry-After; writable again, the same refresh token works (it was not
    spent)."""
    name = urlsplit(outage_database).path.lstrip("/")
    async with serve(replace(settings, database_url=outage_database), clock) as client:
        credentials = {"email": "c@example.com", "password": PASSWORD}
        assert (await client.post("/register", json=credentials)).status_code == 201
        pair = (await client.post("/login", json=credentials)).json()
        await execute(
            outage_postgres.url, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
        )
        # The service's sessions predate the setting: end them, as a demotion does.
        await execute(outage_database, END_OTHER_SESSIONS)
        try:
            refused = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        finally:
            await execute(
                outage_postgres.url, f'ALTER DATABASE "{name}" RESET default_transaction_read_only'
            )
            await execute(outage_database, END_OTHER_SESSIONS)
        again = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        if again.status_code == 503:  # a connection the reset ended, replaced now
            again = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    await assert_unavailable(refused)
    assert again.status_code == 200, again.text
