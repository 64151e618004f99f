"""The feed with real processes: two service instances on one database, and a resource server
(tests/resource_server.py, built with the library) that is killed and started again."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tokenrota_server.config import Settings

from tests.oauth_support import FEED_SCOPE, basic, create_client
from tests.processes import (
    clean_environment,
    free_port,
    started,
    stop_gracefully,
    wait_until_answering,
)
from tests.support import PASSWORD, PROJECT_ROOT, TEST_AUDIENCE

DEADLINE_SECONDS = 30.0
SECRETS = {
    "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
    "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
    "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
}


@contextlib.contextmanager
def service(database_url: str, tmp_path: Path, name: str) -> Iterator[str]:
    """`python -m tokenrota_server serve` on `database_url`; its base URL. Stopped after."""
    port = free_port()
    environment = clean_environment(
        ENV="test",
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path / name),
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8192",
        ARGON2_PARALLELISM="1",
        LOGIN_IP_MAX_ATTEMPTS="10000",
        LOGIN_EMAIL_MAX_ATTEMPTS="10000",
        REGISTER_IP_MAX_ATTEMPTS="10000",
        TOKEN_AUDIENCE=TEST_AUDIENCE,
        **SECRETS,
    )
    command = [sys.executable, "-m", "tokenrota_server", "serve", "--workers", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / f"{name}.log"
    with started(command, cwd=PROJECT_ROOT, env=environment, log=log) as process:
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/readyz", process, seconds=60, log=log)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_gracefully(process, seconds=5)


@contextlib.contextmanager
def resource_server(
    service_url: str, credentials: tuple[str, str], tmp_path: Path, name: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """tests/resource_server.py following `service_url`'s feed; its URL and process."""
    port = free_port()
    environment = clean_environment(
        SERVICE_URL=service_url,
        CLIENT_ID=credentials[0],
        CLIENT_SECRET=credentials[1],
        ACCESS_TOKEN_SECRET=SECRETS["ACCESS_TOKEN_SECRET"],
        PORT=str(port),
        FEED_WAIT="5",
        TOKEN_AUDIENCE=TEST_AUDIENCE,
    )
    command = [sys.executable, "-m", "tests.resource_server"]
    log = tmp_path / f"{name}.log"
    with started(command, cwd=PROJECT_ROOT, env=environment, log=log) as process:
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_answering(f"{url}/follower", process, seconds=60, log=log)
            yield url, process
        finally:
            stop_gracefully(process, seconds=5)


async def login(http: httpx.AsyncClient, base: str, email: str) -> dict[str, Any]:
    response = await http.post(f"{base}/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def until_caught_up(http: httpx.AsyncClient, url: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (await http.get(f"{url}/follower")).json()["caught_up"]:
        assert time.monotonic() < deadline, "the resource server never caught up"
        await asyncio.sleep(0.05)


async def until_refused(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        answer = await http.get(f"{url}/whoami", headers={"Authorization": f"Bearer {token}"})
        if answer.status_code != 200:
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError("the token was never refused")


async def test_two_instances_feed_exactly_the_revoked_set(
    database_url: str, db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    """Sessions are revoked concurrently through two instances while a reader follows the feed
    alternately from either with one cursor: the union of what it read is exactly the set of
    revoked sessions in the database, each once."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    email = f"fleet-{secrets.token_hex(4)}@example.com"
    with (
        service(database_url, tmp_path, "a") as first,
        service(database_url, tmp_path, "b") as second,
    ):
        async with httpx.AsyncClient(timeout=60) as http:
            registered = await http.post(
                f"{first}/register", json={"email": email, "password": PASSWORD}
            )
            assert registered.status_code == 201
            instances = [first, second]
            pairs = [await login(http, instances[n % 2], email) for n in range(40)]
            start = await http.get(f"{first}/oauth/revocations", headers=basic(*credentials))
            cursor = start.json()["cursor"]
            read: list[str] = []
            done = asyncio.Event()

            async def follow() -> None:
                nonlocal cursor
                turn = 0
                while True:
                    finished = done.is_set()
                    answer = await http.get(
                        f"{instances[turn % 2]}/oauth/revocations",
                        params={"after": cursor, "wait": 1},
                        headers=basic(*credentials),
                    )
                    assert answer.status_code == 200, answer.text
                    body = answer.json()
                    read.extend(entry["sid"] for entry in body["sessions"])
                    cursor, turn = body["cursor"], turn + 1
                    if finished and not body["sessions"]:
                        return

            async def logout(n: int, pair: dict[str, Any]) -> None:
                answer = await http.post(
                    f"{instances[n % 2]}/logout", json={"refresh_token": pair["refresh_token"]}
                )
                assert answer.status_code == 204

            reader = asyncio.create_task(follow())
            await asyncio.gather(*(logout(n, pair) for n, pair in enumerate(pairs)))
            done.set()
            await asyncio.wait_for(reader, DEADLINE_SECONDS)

    revoked = {
        str(row["id"])
        for row in await db.fetch("SELECT id FROM sessions WHERE revoked_at IS NOT NULL")
    }
    assert len(revoked) == 40
    assert sorted(read) == sorted(revoked)


async def test_a_restarted_resource_server_catches_up(
    database_url: str, db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    """A resource server process refuses a session revoked while it runs; killed, and started
    again after another revocation, it refuses both: its first read covers the token lifetime."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    email = f"restart-{secrets.token_hex(4)}@example.com"
    with service(database_url, tmp_path, "service") as base:
        async with httpx.AsyncClient(timeout=60) as http:
            await http.post(f"{base}/register", json={"email": email, "password": PASSWORD})
            first, second = await login(http, base, email), await login(http, base, email)
            with resource_server(base, credentials, tmp_path, "rs1") as (url, process):
                await until_caught_up(http, url)
                before = await http.get(
                    f"{url}/whoami", headers={"Authorization": f"Bearer {second['access_token']}"}
                )
                await http.post(f"{base}/logout", json={"refresh_token": first["refresh_token"]})
                while_running = await until_refused(http, url, first["access_token"])
                process.kill()
            await http.post(f"{base}/logout", json={"refresh_token": second["refresh_token"]})
            with resource_server(base, credentials, tmp_path, "rs2") as (url, _):
                await until_caught_up(http, url)
                restarted = [
                    await http.get(
                        f"{url}/whoami", headers={"Authorization": f"Bearer {pair['access_token']}"}
                    )
                    for pair in (first, second)
                ]

    assert before.status_code == 200
    assert while_running.status_code == 403
    assert "session_revoked" in while_running.json()["error_description"]
    assert [answer.status_code for answer in restarted] == [403, 403]
