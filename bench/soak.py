"""The soak: a steady mixed load on one `tokenrota serve` for SOAK_SECONDS (default 1800).

Virtual users log in, read /profile, refresh, have their access token introspected by a
service, and now and then log out and in again, each pacing itself, so the load is steady
rather than as fast as possible. Every SOAK_INTERVAL seconds (default 30) a row is sampled:
the server's RSS, its pool (open connections, lent out), requests/s, p50/p99 of every request
in the interval, and any answer that was not the expected one. At the end: the table (printed,
and written as CSV and markdown under `.data/soak/`) and the RSS slope.

    make soak                        # 30 minutes
    SOAK_SECONDS=300 make soak       # 5 minutes

Production settings (argon2 at its defaults, ENV=production) on a fresh database of the
embedded Postgres (or BENCH_DATABASE_URL's server). Nothing here asserts: the numbers go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.__main__ import (
    ROOT,
    free_port,
    production_environment,
    wait_until_up,
)
from bench.databases import migrated_database

PASSWORD = "correct horse battery staple"
# Each virtual user waits this long between its requests: ~USERS / PAUSE requests/s in all.
PAUSE_SECONDS = 0.05
# Every user logs out and in again after this many rounds (a login costs ~120 ms of argon2).
ROUNDS_PER_SESSION = 200
COLUMNS = (
    "second",
    "rss_mb",
    "pool_open",
    "pool_lent",
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "refresh_p99_ms",
    "unexpected",
)


@dataclass
class Interval:
    """What the users saw since the last sample."""

    latencies: list[float] = field(default_factory=list)
    refresh_latencies: list[float] = field(default_factory=list)
    unexpected: int = 0


@dataclass
class Load:
    """The users' shared record, and the switch that stops them."""

    interval: Interval = field(default_factory=Interval)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    statuses: dict[int, int] = field(default_factory=dict)


async def call(
    load: Load, client: httpx.AsyncClient, method: str, path: str, expect: int, **kwargs: object
) -> httpx.Response | None:
    """One request, timed into the current interval; None (counted) unless it answered `expect`."""
    started = time.perf_counter()
    try:
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError:
        load.interval.unexpected += 1
        return None
    elapsed = time.perf_counter() - started
    load.interval.latencies.append(elapsed)
    if path == "/refresh":
        load.interval.refresh_latencies.append(elapsed)
    load.statuses[response.status_code] = load.statuses.get(response.status_code, 0) + 1
    if response.status_code != expect:
        load.interval.unexpected += 1
        return None
    return response


async def user(load: Load, base_url: str, index: int, introspector: tuple[str, str]) -> None:
    """One virtual user's life: register once, then sessions of ROUNDS_PER_SESSION rounds."""
    credentials = {
        "email": f"soak-{index}-{secrets.token_hex(4)}@example.com",
        "password": PASSWORD,
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        await call(load, client, "POST", "/register", 201, json=credentials)
        while not load.stop.is_set():
            login = await call(load, client, "POST", "/login", 200, json=credentials)
            if login is None:
                await asyncio.sleep(1)
                continue
            pair = login.json()
            for round_number in range(ROUNDS_PER_SESSION):
                if load.stop.is_set():
                    return
                bearer = {"Authorization": f"Bearer {pair['access_token']}"}
                await call(load, client, "GET", "/profile", 200, headers=bearer)
                await asyncio.sleep(PAUSE_SECONDS)
                if round_number % 4 == 3:
                    body = {"refresh_token": pair["refresh_token"]}
                    refreshed = await call(load, client, "POST", "/refresh", 200, json=body)
                    if refreshed is not None:
                        pair = refreshed.json()
                    await asyncio.sleep(PAUSE_SECONDS)
                if round_number % 20 == 10:
                    await call(
                        load,
                        client,
                        "POST",
                        "/oauth/introspect",
                        200,
                        data={"token": pair["access_token"]},
                        auth=introspector,
                    )
                    await asyncio.sleep(PAUSE_SECONDS)
            await call(
                load, client, "POST", "/logout", 204, json={"refresh_token": pair["refresh_token"]}
            )


def pool_gauges(text: str) -> tuple[int, int]:
    """(open, lent out) from /metrics's pool gauges."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("token_service_db_pool_") and not name.startswith("#"):
            values[name.split("{")[0]] = values.get(name.split("{")[0], 0) + float(value)
    size = int(values.get("token_service_db_pool_connections", 0))
    idle = int(values.get("token_service_db_pool_idle_connections", 0))
    return size, size - idle


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def rss_mb(process: psutil.Process) -> float:
    """Resident memory of the server and any workers it spawned, MiB."""
    total: int = process.memory_info().rss  # psutil ships no types: this keeps the sum an int
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20


async def sample(
    load: Load, started: float, seconds: float, server: psutil.Process, base_url: str
) -> dict[str, float]:
    """Close the current interval (`seconds` long) and describe it as one row."""
    interval, load.interval = load.interval, Interval()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        pool_open, pool_lent = pool_gauges((await client.get("/metrics")).text)
    return {
        "second": round(time.monotonic() - started),
        "rss_mb": round(rss_mb(server), 1),
        "pool_open": pool_open,
        "pool_lent": pool_lent,
        "requests_per_s": round(len(interval.latencies) / seconds, 1),
        "p50_ms": round(statistics.median(interval.latencies) * 1000, 2)
        if interval.latencies
        else 0.0,
        "p99_ms": round(percentile(interval.latencies, 0.99) * 1000, 2),
        "refresh_p99_ms": round(percentile(interval.refresh_latencies, 0.99) * 1000, 2),
        "unexpected": interval.unexpected,
    }


def slope_per_hour(rows: list[dict[str, float]], column: str) -> float:
    """Least-squares slope of `column` against time, per hour (0 for fewer than two rows)."""
    if len(rows) < 2:
        return 0.0
    xs = [row["second"] / 3600 for row in rows]
    ys = [row[column] for row in rows]
    return statistics.linear_regression(xs, ys).slope


def write(rows: list[dict[str, float]], directory: Path, stamp: str) -> tuple[Path, Path]:
    """The rows as CSV and as a markdown table; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, markdown_path = directory / f"soak-{stamp}.csv", directory / f"soak-{stamp}.md"
    with csv_path.open("w", newline="") as output:
        writer = csv.DictWriter(output, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[name]) for name in COLUMNS) + " |" for row in rows]
    markdown_path.write_text("\n".join(lines) + "\n")
    return csv_path, markdown_path


async def soak(arguments: argparse.Namespace) -> None:
    async with migrated_database() as database_url:
        port = free_port()
        environment = production_environment(
            "https://soak.tokenrota.invalid",
            DATABASE_URL=database_url,
            PORT=str(port),
            # The users all come from 127.0.0.1: the per-address limits would stop them.
            LOGIN_IP_MAX_ATTEMPTS="1000000",
            REGISTER_IP_MAX_ATTEMPTS="1000000",
        )
        command = [sys.executable, "-m", "tokenrota_server"]
        creating = await asyncio.create_subprocess_exec(
            *command,
            "create-client",
            "soak-introspector",
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        output, _ = await creating.communicate()
        client = json.loads(output.decode().strip().splitlines()[-1])
        introspector = (client["client_id"], client["client_secret"])
        server = await asyncio.create_subprocess_exec(
            *command, "serve", env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        base_url = f"http://127.0.0.1:{port}"
        load = Load()
        rows: list[dict[str, float]] = []
        try:
            await wait_until_up(base_url)
            process = psutil.Process(server.pid)
            users = [
                asyncio.create_task(user(load, base_url, index, introspector))
                for index in range(arguments.users)
            ]
            started = time.monotonic()
            print(" ".join(f"{name:>14}" for name in COLUMNS), flush=True)
            closed = started
            while time.monotonic() - started < arguments.seconds:
                await asyncio.sleep(arguments.interval)
                # The interval's real length: sampling itself takes a moment.
                now = time.monotonic()
                row = await sample(load, started, now - closed, process, base_url)
                closed = now
                rows.append(row)
                print(" ".join(f"{row[name]:>14}" for name in COLUMNS), flush=True)
            load.stop.set()
            await asyncio.gather(*users)
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), timeout=30)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    csv_path, markdown_path = write(rows, Path(arguments.out), stamp)
    print(f"statuses: {dict(sorted(load.statuses.items()))}")
    print(
        f"RSS slope {slope_per_hour(rows, 'rss_mb'):+.1f} MiB/h, p99 slope "
        f"{slope_per_hour(rows, 'p99_ms'):+.2f} ms/h over {len(rows)} intervals; "
        f"written to {csv_path} and {markdown_path}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", 1800)))
    parser.add_argument("--interval", type=int, default=int(os.environ.get("SOAK_INTERVAL", 30)))
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / ".data" / "soak"))
    asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
