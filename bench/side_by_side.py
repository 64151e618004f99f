"""The service beside the bare prototype (bench/prototype.py), in one run, on one database.

Three servers run at once on the same database and secrets: the service with one worker, the
service with `--workers 2`, and the prototype. Each round measures them one after the other, in
an order that alternates between rounds (the machine is shared and noisy), and the report gives
the median over rounds and the spread (lowest to highest):

- /refresh and /profile one request at a time (httpx): p50 and p99 per round;
- /profile at 32 connections with `wrk` (when installed): requests/s, p50 and p99;
- the service's /profile with `--workers 2` against one worker, with `wrk`;
- /oauth/introspect at 32 connections on one worker (one process: one core), with `wrk`.

A ratio is taken within each round (ours over the prototype's) before its median is reported.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import asyncpg
import httpx
from argon2 import PasswordHasher

ROOT = Path(__file__).resolve().parent.parent
Sample = dict[str, float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


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


async def timed(call: Callable[[], Awaitable[None]], count: int) -> Sample:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return {"p50": statistics.median(samples) * 1000, "p99": percentile(samples, 0.99) * 1000}


def wrk_milliseconds(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * scale
    raise ValueError(text)


async def wrk(
    url: str, seconds: int, *, headers: dict[str, str], body: str | None = None
) -> Sample:
    """Requests/s, p50 and p99 (ms) of `wrk -t1 -c32 --latency` on `url`; a non-2xx is an error."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if body is not None:
            script.write(f'wrk.method = "POST"\nwrk.body = "{body}"\n')
        for name, value in headers.items():
            script.write(f'wrk.headers["{name}"] = "{value}"\n')
        script.flush()
        process = await asyncio.create_subprocess_exec(
            *("wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "-s", script.name, url),
            stdout=subprocess.PIPE,
        )
        output = (await process.communicate())[0].decode()
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk got errors from {url}:\n{output}")
    result: Sample = {}
    for line in output.splitlines():
        fields = line.split()
        if line.startswith("Requests/sec:"):
            result["rate"] = float(fields[1])
        elif fields[:1] in (["50%"], ["99%"]):
            result["p" + fields[0].rstrip("%")] = wrk_milliseconds(fields[1])
    return result


def spread(values: list[float], digits: int = 2) -> str:
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{middle:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


async def compare(
    database_url: str, environment: dict[str, str], rounds: int, seconds: int
) -> None:
    """Start the three servers on `database_url`, measure `rounds` rounds, print the report."""
    ports = {name: free_port() for name in ("ours", "ours x2", "prototype")}
    serve = [sys.executable, "-m", "tokenrota_server", "serve"]
    prototype = [sys.executable, "-m", "uvicorn", "bench.prototype:app", "--no-access-log"]
    prototype += ["--loop", "uvloop", "--http", "httptools", "--host", "127.0.0.1"]
    environment = {**environment, "DATABASE_URL": database_url}
    log = (ROOT / ".data" / "bench-prototype.log").open("w")
    servers = [
        await start(serve, {**environment, "PORT": str(ports["ours"])}),
        await start([*serve, "--workers", "2"], {**environment, "PORT": str(ports["ours x2"])}),
        # The prototype logs only its errors: kept for whoever changes it.
        await start([*prototype, "--port", str(ports["prototype"])], environment, log),
    ]
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        await wait_until_up(base["ours"])
        await wait_until_up(base["ours x2"])
        await wait_until_up(base["prototype"], "/refresh")  # 405 to a GET
        await measure(base, database_url, rounds, seconds)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            await asyncio.wait_for(server.wait(), timeout=10)
        log.close()


async def measure(base: dict[str, str], database_url: str, rounds: int, seconds: int) -> None:
    client_id, secret = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex + uuid.uuid4().hex
    connection = await asyncpg.connect(database_url)
    await connection.execute(
        "INSERT INTO clients (client_id, name, secret_hash, scopes) VALUES ($1, 'bench', $2, $3)",
        client_id,
        PasswordHasher().hash(secret),
        ["read"],
    )
    await connection.close()
    async with httpx.AsyncClient(timeout=30) as client:
        email, password = f"side-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
        credentials = {"email": email, "password": password}
        (await client.post(f"{base['ours']}/register", json=credentials)).raise_for_status()
        pair = (await client.post(f"{base['ours']}/login", json=credentials)).json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        # One refresh chain per server: the service's login makes the prototype's tokens too.
        chains = {
            name: (await client.post(f"{base['ours']}/login", json=credentials)).json()[
                "refresh_token"
            ]
            for name in ("ours", "prototype")
        }

        def refresher(name: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                answer = await client.post(
                    f"{base[name]}/refresh", json={"refresh_token": chains[name]}
                )
                answer.raise_for_status()
                chains[name] = answer.json()["refresh_token"]

            return call

        def profiler(name: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                (await client.get(f"{base[name]}/profile", headers=bearer)).raise_for_status()

            return call

        for name in ("ours", "prototype"):  # warm the pools and statement caches
            await timed(refresher(name), 30)
            await timed(profiler(name), 30)
        use_wrk = shutil.which("wrk") is not None
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        introspect_headers = {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        # The first call pays the argon2 check of the client's secret; later ones are remembered.
        answer = await client.post(
            f"{base['ours']}/oauth/introspect",
            data={"token": pair["access_token"]},
            headers={"Authorization": f"Basic {basic}"},
        )
        answer.raise_for_status()

        results: dict[str, list[Sample]] = {}

        def keep(key: str, sample: Sample) -> None:
            results.setdefault(key, []).append(sample)

        for round_number in range(rounds):
            order = ["ours", "prototype"] if round_number % 2 == 0 else ["prototype", "ours"]
            for name in order:
                keep(f"refresh {name}", await timed(refresher(name), 100))
                keep(f"profile {name}", await timed(profiler(name), 200))
            if not use_wrk:
                continue
            for name in [*order, "ours x2"]:
                keep(f"wrk {name}", await wrk(f"{base[name]}/profile", seconds, headers=bearer))
            keep(
                "introspect",
                await wrk(
                    f"{base['ours']}/oauth/introspect",
                    seconds,
                    headers=introspect_headers,
                    body=f"token={pair['access_token']}",
                ),
            )
    report(results, rounds, seconds)


def report(results: dict[str, list[Sample]], rounds: int, seconds: int) -> None:
    def column(key: str, field: str) -> list[float]:
        return [sample[field] for sample in results[key]]

    def ratios(ours: str, theirs: str, field: str, inverse: bool = False) -> list[float]:
        pairs = zip(column(ours, field), column(theirs, field), strict=True)
        return [(b / a if inverse else a / b) for a, b in pairs]

    print(f"side by side with the bare prototype, {rounds} interleaved rounds:")
    print("  median (lowest-highest) of the rounds' values; ratios are taken within each round")
    print("  one request at a time, ms                 ours                 prototype")
    for route in ("refresh", "profile"):
        for field in ("p50", "p99"):
            ours, theirs = column(f"{route} ours", field), column(f"{route} prototype", field)
            print(f"  {route:<8} {field}  {spread(ours):>30}  {spread(theirs):>24}")
    for route in ("refresh", "profile"):
        speed = ratios(f"{route} ours", f"{route} prototype", "p50", inverse=True)
        tail = ratios(f"{route} ours", f"{route} prototype", "p99")
        print(
            f"  {route}: ours at {spread(speed)}x the prototype's rate (1/p50),"
            f" p99 at {spread(tail)}x"
        )
    if "wrk ours" not in results:
        print("  (install wrk, Debian package `wrk`, for the throughput lines)")
        return
    print(f"  GET /profile with wrk, 32 connections, {seconds} s per round:")
    for name in ("ours", "prototype", "ours x2"):
        rate, p50, p99 = (column(f"wrk {name}", field) for field in ("rate", "p50", "p99"))
        print(
            f"    {name:<10} {spread(rate, 0):>20} requests/s"
            f"  p50 {spread(p50)} ms  p99 {spread(p99)} ms"
        )
    print(
        f"    ours / prototype, requests/s: {spread(ratios('wrk ours', 'wrk prototype', 'rate'))}x"
    )
    print(
        f"    ours / prototype, p99:        {spread(ratios('wrk ours', 'wrk prototype', 'p99'))}x"
    )
    print(f"    --workers 2 / one worker:     {spread(ratios('wrk ours x2', 'wrk ours', 'rate'))}x")
    rate, p99 = column("introspect", "rate"), column("introspect", "p99")
    print(
        f"  POST /oauth/introspect, one worker (one core), wrk 32 connections: "
        f"{spread(rate, 0)} requests/s, p99 {spread(p99)} ms"
    )
