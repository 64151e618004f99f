"""Several uvicorn workers behind one port: /metrics adds up every worker's counts.

`tokenrota serve --workers N` hands its resolved settings to the workers and, without a
PROMETHEUS_MULTIPROC_DIR, gives them a private one for the run; `tokenrota_server.asgi` is
what the workers (or a hand-run uvicorn) import.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.cli.test_config import run_cli
from tests.conftest import PASSWORD, PROJECT_ROOT
from tests.e2e.test_shutdown import wait_until_alive
from tests.processes import free_port, kill_group

REQUESTS = 40


def healthz_count(exposition: str) -> float:
    match = re.search(
        r'^token_service_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$',
        exposition,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


async def test_metrics_add_up_across_workers(database_url: str, tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, any worker's /metrics counts the requests of all."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    environment = {
        **os.environ,
        "ENV": "test",
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        "DATA_DIR": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "tokenrota_server.asgi:create_from_environment",
        "--workers",
        "2",
        "--port",
        str(port),
        "--no-access-log",
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # A group of its own: the workers are killed with it should the stop fail.
        process_group=0,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_alive(base_url, process)
        # New connections, so the kernel spreads them over both workers.
        for _ in range(REQUESTS):
            async with httpx.AsyncClient(base_url=base_url) as client:
                assert (await client.get("/healthz")).status_code == 200
        scrapes = []
        for _ in range(6):
            async with httpx.AsyncClient(base_url=base_url) as client:
                scrapes.append((await client.get("/metrics")).text)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        finally:
            kill_group(process.pid)
    assert process.stderr is not None
    raw = (await process.stderr.read()).decode().splitlines()
    # The supervising parent logs plain lines before any worker loads the app; skip those.
    lines = [json.loads(line) for line in raw if line.startswith("{")]
    served = [line for line in lines if line.get("route") == "/healthz"]
    serving_pids = {line["pid"] for line in served}

    assert len({line["pid"] for line in lines if "Started server" in line["message"]}) == 2
    # Every scrape, whichever worker answered it, counts the requests that all workers served.
    assert [healthz_count(scrape) for scrape in scrapes] == [len(served)] * len(scrapes)
    assert len(served) >= REQUESTS
    # Usually both workers served some; then the equality above is the sum over workers.
    assert 1 <= len(serving_pids) <= 2


async def test_serve_with_workers_hands_them_its_settings_and_a_metrics_directory(
    database_url: str, tmp_path: Path
) -> None:
    """No secrets given: generated once by `serve`, used by both workers; metrics summed."""
    port = free_port()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "ENV": "development",
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "TMPDIR": str(temporary),
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "8192",
        "ARGON2_PARALLELISM": "1",
        # The flags win over these, or serve could not start at all.
        "HOST": "web.invalid",
        "PORT": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrota_server",
        "serve",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # A group of its own: the workers are killed with it should the stop fail.
        process_group=0,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_alive(base_url, process)
        metrics_dirs = [path.name for path in temporary.iterdir()]
        async with httpx.AsyncClient(base_url=base_url) as client:
            credentials = {"email": "workers@example.com", "password": PASSWORD}
            assert (await client.post("/register", json=credentials)).status_code == 201
            login = await client.post("/login", json=credentials)
            assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        # New connections, so the kernel spreads them over both workers.
        for _ in range(REQUESTS):
            async with httpx.AsyncClient(base_url=base_url) as client:
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/profile", headers=bearer)).status_code == 200
        scrapes = []
        for _ in range(6):
            async with httpx.AsyncClient(base_url=base_url) as client:
                scrapes.append((await client.get("/metrics")).text)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = await asyncio.wait_for(process.wait(), timeout=30)
        finally:
            kill_group(process.pid)
    assert process.stderr is not None
    raw = (await process.stderr.read()).decode().splitlines()
    lines = [json.loads(line) for line in raw if line.startswith("{")]
    served = [line for line in lines if line.get("route") == "/healthz"]

    assert returncode == 0
    assert len({line["pid"] for line in lines if "Started server" in line["message"]}) == 2
    assert [healthz_count(scrape) for scrape in scrapes] == [len(served)] * len(scrapes)
    assert len(served) >= REQUESTS  # and the start-up probe's
    # The parent generated the secrets and said so; the workers found them in the environment.
    assert [line for line in raw if line.startswith("development secrets")] == [
        f"development secrets generated into {tmp_path / 'data' / 'secrets.env'} (mode 0600)"
    ]
    assert [line for line in raw if "uvicorn.access" in line] == [], "one access line a request"
    assert len(metrics_dirs) == 1
    assert metrics_dirs[0].startswith("tokenrota-metrics-")
    assert list(temporary.iterdir()) == [], "the run's metrics directory is removed at exit"


def test_a_metrics_directory_that_does_not_exist_is_refused_in_one_line(
    tmp_path: Path, database_url: str
) -> None:
    environ = {
        "ENV": "test",
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"),
        "PORT": str(free_port()),
    }

    result = run_cli("serve", "--workers", "2", environ=environ)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: PROMETHEUS_MULTIPROC_DIR={tmp_path / 'missing'} is not a directory; create it "
        "(empty, writable by every worker), or unset it"
    ]


def test_the_asgi_factory_refuses_bad_settings_in_one_line_and_status_3(tmp_path: Path) -> None:
    """Status 3 is uvicorn's "could not start": its supervisor stops rather than retry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tokenrota_server.asgi:create_from_environment",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "ENV": "production"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        "error: ENV=production needs ACCESS_TOKEN_SECRET and REFRESH_TOKEN_SECRET "
        "(two different random values of at least 32 bytes)"
    ]
