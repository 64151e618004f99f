"""What DATABASE_POOLER=transaction costs on GET /profile (asyncpg's statement cache off).

Three servers on one fresh database of the embedded Postgres, measured in interleaved rounds
with wrk (16 connections, `--seconds` each): DATABASE_POOLER=none straight to Postgres,
=transaction straight to Postgres (the cache off, nothing else changed), and =transaction
through PgBouncer in transaction mode (Debian's pgbouncer, started here). Medians of the
rounds' requests/s and p99 go to docs/benchmarks.md.

    .venv/bin/python -m bench.pooler_cost [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.__main__ import (
    free_port,
    production_environment,
    wait_until_up,
)
from bench.databases import bench_server, migrated_database
from bench.wrk import milliseconds as wrk_milliseconds
from tests.pooler import running_pgbouncer, through

CONNECTIONS = 16


async def wrk(url: str, bearer: str, seconds: int) -> tuple[float, float]:
    """(requests/s, p99 ms) of `wrk` on `url` with the bearer token."""
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t2",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {bearer}",
        url,
        stdout=subprocess.PIPE,
    )
    output, _ = await process.communicate()
    text = output.decode()
    rate = next(float(line.split()[1]) for line in text.splitlines() if "Requests/sec" in line)
    p99 = next(line.split()[1] for line in text.splitlines() if line.strip().startswith("99%"))
    return rate, wrk_milliseconds(p99)


async def start(environment: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrota_server",
        "serve",
        env={**environment, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    await wait_until_up(base_url)
    return server, base_url


async def measure(database_url: str, pooled_url: str, arguments: argparse.Namespace) -> None:
    base = production_environment(
        "https://pooler.tokenrota.invalid", DATABASE_DIRECT_URL=database_url
    )
    variants = {
        "cache on, direct": {"DATABASE_URL": database_url, "DATABASE_POOLER": "none"},
        "cache off, direct": {"DATABASE_URL": database_url, "DATABASE_POOLER": "transaction"},
        "cache off, pgbouncer": {"DATABASE_URL": pooled_url, "DATABASE_POOLER": "transaction"},
    }
    servers = {name: await start({**base, **extra}) for name, extra in variants.items()}
    try:
        any_url = next(iter(servers.values()))[1]
        async with httpx.AsyncClient(base_url=any_url, timeout=60) as client:
            credentials = {"email": "ada@example.com", "password": "correct horse battery"}
            assert (await client.post("/register", json=credentials)).status_code == 201
            bearer = (await client.post("/login", json=credentials)).json()["access_token"]
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for _ in range(arguments.rounds):
            for name, (_, url) in servers.items():
                results[name].append(await wrk(f"{url}/profile", bearer, arguments.seconds))
    finally:
        for server, _ in servers.values():
            server.terminate()
            await asyncio.wait_for(server.wait(), timeout=30)
    print(f"GET /profile, wrk {CONNECTIONS} connections, medians of {arguments.rounds} rounds:")
    reference = statistics.median(rate for rate, _ in results["cache on, direct"])
    for name, samples in results.items():
        rate = statistics.median(rate for rate, _ in samples)
        p99 = statistics.median(p99 for _, p99 in samples)
        print(f"  {name:<22} {rate:7.0f} requests/s ({rate / reference:.2f}x)  p99 {p99:.1f} ms")


async def run(arguments: argparse.Namespace) -> None:
    server_url = bench_server()  # PgBouncer, too, stands before this server
    async with migrated_database(server_url) as database_url:
        with tempfile.TemporaryDirectory() as workdir:
            os.chmod(workdir, 0o755)  # noqa: S103 - pgbouncer drops to another user to read it
            with running_pgbouncer(server_url, Path(workdir) / "pgbouncer") as pooler_url:
                await measure(database_url, through(pooler_url, database_url), arguments)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pooler_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
