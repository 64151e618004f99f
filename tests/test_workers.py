"""Several uvicorn workers behind one port: /metrics adds up every worker's counts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import sys
from pathlib import Path

import httpx

from tests.conftest import PROJECT_ROOT
from tests.test_shutdown import free_port, wait_until_alive

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
        await asyncio.wait_for(process.wait(), timeout=30)
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
