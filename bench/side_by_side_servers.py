"""The servers the side-by-side run measures, started together and stopped whatever happens.

The service with one worker ("ours"), with `--workers 2` ("ours x2"), the bare prototype
("prototype"); with a network delay, the service and the prototype again ("ours net",
"prototype net") on a database reached through bench/latency_proxy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx

from bench.raw_http import RawClient

ROOT = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "tokenrota_server", "serve"]
PROTOTYPE = [sys.executable, "-m", "uvicorn", "bench.prototype:app", "--no-access-log"]
PROTOTYPE += ["--loop", "uvloop", "--http", "httptools", "--host", "127.0.0.1"]


@dataclass
class Server:
    """One server under test: its base URL, its process (whose CPU is counted), a raw client."""

    base: str
    process: asyncio.subprocess.Process
    client: RawClient = field(init=False)

    def __post_init__(self) -> None:
        address = urlsplit(self.base)
        self.client = RawClient(address.hostname or "127.0.0.1", address.port or 80)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start(
    command: list[str], environment: dict[str, str], errors: int | IO[str] = subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=errors
    )


async def wait_until_up(base_url: str, path: str = "/healthz") -> None:
    """Wait until `base_url` answers at all: the prototype has no health route."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(1200):  # a minute, for a loaded machine
            try:
                await client.get(path)
                return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{base_url} did not start")


def proxy_target(database_url: str) -> str:
    """Where `database_url`'s server listens, as bench.latency_proxy takes it: HOST:PORT, or a
    Unix socket's path (libpq's `host=/directory` and the port's `.s.PGSQL.PORT` in it)."""
    address = urlsplit(database_url)
    port = address.port or int(parse_qs(address.query).get("port", ["5432"])[0])
    directory = parse_qs(address.query).get("host", [""])[0]
    if directory.startswith("/"):
        return f"{directory}/.s.PGSQL.{port}"
    return f"{address.hostname or '127.0.0.1'}:{port}"


def through_proxy(database_url: str, port: int) -> str:
    """`database_url` with its server replaced by the proxy on 127.0.0.1:`port`."""
    address = urlsplit(database_url)
    credentials = address.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    query = {k: v for k, v in parse_qs(address.query).items() if k not in ("host", "port")}
    return urlunsplit(address._replace(netloc=netloc, query=urlencode(query, doseq=True)))


@contextlib.asynccontextmanager
async def running(
    database_url: str, environment: dict[str, str], network_delay_ms: float
) -> AsyncIterator[dict[str, Server]]:
    """Start the servers on `database_url` with `environment`, yield them by name once each
    answers, and stop them (and the proxy) on the way out, whatever happened."""
    environment = {**environment, "DATABASE_URL": database_url}
    processes: list[asyncio.subprocess.Process] = []
    servers: dict[str, Server] = {}
    log = (ROOT / ".data" / "bench-prototype.log").open("w")

    async def launch(name: str, command: list[str], settings: dict[str, str]) -> None:
        port = free_port()
        is_prototype = name.startswith("prototype")
        # The prototype logs only its errors: kept for whoever changes it.
        process = await start(
            [*command, "--port", str(port)] if is_prototype else command,
            {**settings, "PORT": str(port)},
            log if is_prototype else subprocess.DEVNULL,
        )
        processes.append(process)
        servers[name] = Server(f"http://127.0.0.1:{port}", process)

    try:
        await launch("ours", SERVE, environment)
        await launch("ours x2", [*SERVE, "--workers", "2"], environment)
        await launch("prototype", PROTOTYPE, environment)
        if network_delay_ms > 0:
            proxy_port = free_port()
            proxy = [sys.executable, "-m", "bench.latency_proxy", str(proxy_port)]
            proxy += [proxy_target(database_url), str(network_delay_ms)]
            processes.append(await start(proxy, environment))
            delayed = {**environment, "DATABASE_URL": through_proxy(database_url, proxy_port)}
            await launch("ours net", SERVE, delayed)
            await launch("prototype net", PROTOTYPE, delayed)
        for name, server in servers.items():
            # 405 from the prototype to a GET: it has no health route.
            await wait_until_up(server.base, "/refresh" if "prototype" in name else "/healthz")
        yield servers
    finally:
        for server in servers.values():
            await server.client.close()
        for process in processes:
            process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), timeout=30)
        log.close()
