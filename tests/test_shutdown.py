"""SIGTERM: `tokenrota serve` finishes the requests in flight, closes the pool, exits."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import httpx

from tests.processes import free_port
from tests.support import PASSWORD, PROJECT_ROOT


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
