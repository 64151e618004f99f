"""Latency and throughput of login, refresh and profile against a real server and Postgres.

Starts `tokenrota serve` (as `python -m tokenrota_server`) in a subprocess (uvicorn with
uvloop/httptools, production argon2 parameters) on a fresh database of the embedded Postgres
(or BENCH_DATABASE_URL's server), then drives it over HTTP from this process. Numbers go to
docs/benchmarks.md; nothing here asserts speed.

    make bench            # or: .venv/bin/python -m bench --rounds 300 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx

from bench import side_by_side
from bench.databases import migrated_database

ROOT = Path(__file__).resolve().parent.parent
# Production refuses to serve without mail settings; nothing here sends mail (port 9 is discard,
# and nothing listens there on this machine: a message would only be retried).
PRODUCTION_MAIL = {
    "SMTP_URL": "smtp://127.0.0.1:9",
    "PASSWORD_RESET_URL": "https://bench.tokenrota.invalid/reset",
    "EMAIL_VERIFICATION_URL": "https://bench.tokenrota.invalid/verify",
}


@contextlib.asynccontextmanager
async def serving(environment: dict[str, str]) -> AsyncIterator[str]:
    """`tokenrota serve` in a child process with `environment` (its PORT on 127.0.0.1); yields
    the base URL once it answers, and stops the server on the way out, whatever happened."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrota_server",
        "serve",
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base_url = f"http://127.0.0.1:{environment['PORT']}"
        await wait_until_up(base_url)
        yield base_url
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=30)


def production_environment(issuer: str, **settings: str) -> dict[str, str]:
    """This process's environment plus what `tokenrota serve` needs with ENV=production: an
    https issuer (nothing here fetches the metadata it names), fresh secrets, mail settings;
    then `settings` (DATABASE_URL, PORT, limits ...), which win."""
    return {
        **os.environ,
        "ENV": "production",
        "TOKEN_ISSUER": issuer,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        **PRODUCTION_MAIL,
        **settings,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_up(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        # A minute: on a loaded machine the server's imports alone took more than 10 s.
        for _ in range(1200):
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    return f"{name:<28} n={len(samples):<5} p50={p50:7.2f} ms  p95={p95:7.2f} ms"


async def sequential(call: Callable[[], Awaitable[None]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def throughput(call: Callable[[], Awaitable[None]], total: int, concurrency: int) -> float:
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def run(arguments: argparse.Namespace) -> None:
    if arguments.side_rounds and not shutil.which("wrk"):
        raise SystemExit("the side-by-side part needs wrk (Debian package wrk); --side-rounds 0")
    async with migrated_database() as database_url:
        port = free_port()
        environment = production_environment(
            "https://bench.tokenrota.invalid", DATABASE_URL=database_url, PORT=str(port)
        )
        if not arguments.side_only:
            async with serving(environment) as base_url:
                await measure(base_url, arguments)
        if arguments.side_rounds:
            options = side_by_side.Options(
                rounds=arguments.side_rounds,
                wrk_seconds=arguments.wrk_seconds,
                httpx_too=arguments.httpx_too,
                network_delay_ms=arguments.network_delay_ms,
            )
            await side_by_side.compare(database_url, environment, options)


async def measure(base_url: str, arguments: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=arguments.concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        email, password = f"bench-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
        response = await client.post("/register", json={"email": email, "password": password})
        response.raise_for_status()
        credentials = {"email": email, "password": password}

        async def login() -> None:
            (await client.post("/login", json=credentials)).raise_for_status()

        pair = (await client.post("/login", json=credentials)).json()
        token = {"refresh_token": pair["refresh_token"]}

        async def refresh() -> None:
            response = await client.post("/refresh", json=token)
            response.raise_for_status()
            token["refresh_token"] = response.json()["refresh_token"]

        bearer = {"Authorization": f"Bearer {pair['access_token']}"}

        async def profile() -> None:
            (await client.get("/profile", headers=bearer)).raise_for_status()

        async def healthz() -> None:
            (await client.get("/healthz")).raise_for_status()

        for _ in range(20):  # warm the pool, the statement caches and the connections
            await refresh()
            await profile()
        print(f"one request at a time ({arguments.rounds} rounds; login {arguments.logins}):")
        print(summary("POST /login (argon2id)", await sequential(login, arguments.logins)))
        print(summary("POST /refresh (rotation)", await sequential(refresh, arguments.rounds)))
        print(summary("GET /profile", await sequential(profile, arguments.rounds)))
        print(summary("GET /healthz (no database)", await sequential(healthz, arguments.rounds)))

        # Concurrent refreshes need one chain each, or they would race one token into reuse.
        chains = [
            (await client.post("/login", json=credentials)).json()["refresh_token"]
            for _ in range(arguments.concurrency)
        ]
        per_chain = arguments.total // len(chains)

        async def walk_chain(token: str) -> None:
            for _ in range(per_chain):
                response = await client.post("/refresh", json={"refresh_token": token})
                response.raise_for_status()
                token = response.json()["refresh_token"]

        started = time.perf_counter()
        await asyncio.gather(*(walk_chain(chain) for chain in chains))
        refresh_rate = per_chain * len(chains) / (time.perf_counter() - started)

        print(f"throughput at concurrency {arguments.concurrency}, requests/s:")
        print(f"  POST /refresh  {refresh_rate:8.0f}")
        concurrency = arguments.concurrency
        profile_rate = await throughput(profile, arguments.total, concurrency)
        healthz_rate = await throughput(healthz, arguments.total, concurrency)
        print(f"  GET /profile   {profile_rate:8.0f}")
        print(f"  GET /healthz   {healthz_rate:8.0f}")
        if shutil.which("wrk"):
            # httpx in this process saturates a core before the server does; wrk (C) does not.
            print(f"with wrk, {concurrency} connections, 5 s each, requests/s:")
            for path, headers in (("/profile", bearer), ("/healthz", {})):
                print(
                    f"  GET {path:<10} {await wrk_rate(base_url + path, headers, concurrency):8.0f}"
                )


async def wrk_rate(url: str, headers: dict[str, str], connections: int) -> float:
    """Requests per second that `wrk` (Debian package `wrk`) reaches on `url`."""
    options = [f"--header={name}: {value}" for name, value in headers.items()]
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", "-d5s", *options, url, stdout=subprocess.PIPE
    )
    output, _ = await process.communicate()
    for line in output.decode().splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError("wrk printed no rate")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--side-rounds", type=int, default=7, help="rounds beside the prototype (0: none)"
    )
    parser.add_argument("--wrk-seconds", type=int, default=4, help="each wrk run, per round")
    parser.add_argument(
        "--side-only", action="store_true", help="only the side-by-side part (not the above)"
    )
    parser.add_argument(
        "--httpx-too",
        action="store_true",
        help="side by side, also time one request at a time through httpx (the client's cost)",
    )
    parser.add_argument(
        "--network-delay-ms",
        type=float,
        default=0.0,
        help="side by side, also /refresh with Postgres behind a proxy delaying each way (0: no)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
