"""SIGTERM: `tokenrota serve` finishes the requests in flight, closes the pool, exits."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.oauth_support import FEED_SCOPE, basic, create_client
from tests.processes import (
    clean_environment,
    free_port,
    started,
    stop_gracefully,
    wait_until_answering,
)
from tests.support import PASSWORD, PROJECT_ROOT

# The longest `wait` a feed long poll may ask for; uvicorn's graceful timeout is 20 s.
LONG_POLL_WAIT = 30


async def wait_until_alive(base_url: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=base_url) as client:
        while time.monotonic() < deadline:
            assert process.returncode is None, "the service exited during startup"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the service did not start")


async def test_sigterm_drains_requests_in_flight_and_closes_the_pool(
    database_url: str, tmp_path: Path
) -> None:
    """A login under way when SIGTERM arrives still gets its tokens; then the process exits."""
    port = free_port()
    environment = {
        **os.environ,
        "ENV": "test",
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        "PORT": str(port),
        "DATA_DIR": str(tmp_path),
        # Expensive enough that a login is still hashing when the signal lands.
        "ARGON2_TIME_COST": "16",
        "ARGON2_MEMORY_COST": "65536",
        "ARGON2_PARALLELISM": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrota_server",
        "serve",
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_alive(base_url, process)
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            credentials = {"email": "drain@example.com", "password": PASSWORD}
            assert (await client.post("/register", json=credentials)).status_code == 201
            login = asyncio.create_task(client.post("/login", json=credentials))
            await asyncio.sleep(0.15)

            process.send_signal(signal.SIGTERM)
            response = await login
        returncode = await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    lines = [json.loads(line) for line in (await process.stderr.read()).decode().splitlines()]

    assert response.status_code == 200
    assert "access_token" in response.json()
    # uvicorn shuts down cleanly, then re-raises the signal it caught, so the parent sees the
    # conventional "terminated by SIGTERM" status rather than a crash or a timeout.
    assert returncode == -signal.SIGTERM
    messages = [line["message"] for line in lines]
    assert "database pool closed" in messages
    login_lines = [line for line in lines if line.get("route") == "/login"]
    assert [line["status"] for line in login_lines] == [200]
    # The server began after the client sent it, and the signal went 150 ms after sending:
    # lasting longer than that, the request ended after the signal, so it was drained.
    assert login_lines[0]["duration_ms"] > 150
    # The drained request was logged before the pool closed.
    assert lines.index(login_lines[0]) < messages.index("database pool closed")


async def until_exited(process: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait (without blocking the loop) until `process` has exited; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        assert time.monotonic() < deadline, "the service did not exit"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_answers_a_long_poll_in_flight_at_once(
    database_url: str, db: asyncpg.Connection, settings: Settings, tmp_path: Path, workers: int
) -> None:
    """A revocation feed long poll held when SIGTERM arrives gets its 200 at once (nothing new,
    the same cursor), and the process (each worker) stops gracefully, while most of the poll's
    30 s wait is left: uvicorn's 20 s graceful timeout would otherwise have run out first."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    port = free_port()
    environment = clean_environment(
        ENV="test",
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path),
        ACCESS_TOKEN_SECRET=secrets.token_urlsafe(48),
        REFRESH_TOKEN_SECRET=secrets.token_urlsafe(48),
        MFA_ENCRYPTION_KEY=secrets.token_urlsafe(48),
    )
    command = [sys.executable, "-m", "tokenrota_server", "serve", "--workers", str(workers)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with started(command, cwd=PROJECT_ROOT, env=environment, log=log) as process:
        try:
            wait_until_answering(f"{base_url}/readyz", process, seconds=60, log=log)
            async with httpx.AsyncClient(base_url=base_url, headers=basic(*credentials)) as http:
                cursor = (await http.get("/oauth/revocations")).json()["cursor"]
            # By hand, so the request is known to be sent before anything else happens.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET /oauth/revocations?after={cursor}&wait={LONG_POLL_WAIT} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                f"Authorization: {basic(*credentials)['Authorization']}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            sent = time.monotonic()
            # Later connections answered: the poll's, queued before them, has been taken up.
            for _ in range(2 * workers):
                async with httpx.AsyncClient(base_url=base_url) as probe:
                    assert (await probe.get("/healthz")).status_code == 200
            await asyncio.sleep(1)
            assert not reader.at_eof()
            process.send_signal(signal.SIGTERM)
            raw = await asyncio.wait_for(reader.read(), timeout=2 * LONG_POLL_WAIT)
            answered = time.monotonic()
            writer.close()
            await until_exited(process, seconds=2 * LONG_POLL_WAIT)
            exited = time.monotonic()
        finally:
            stop_gracefully(process, seconds=5)

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw
    assert json.loads(body) == {"cursor": cursor, "sessions": [], "tokens": [], "clients": []}
    assert sent < answered <= exited
    # Both came while the poll had half its wait left, before uvicorn's 20 s would end.
    assert exited - sent < LONG_POLL_WAIT / 2, exited - sent
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    # Stopped gracefully (each worker closed its pool), not cancelled nor killed.
    assert messages.count("database pool closed") == workers
    polls = [line for line in lines if line.get("route") == "/oauth/revocations"]
    assert [line["status"] for line in polls] == [200, 200]
