"""Revocation → first rejection at a resource server built with the library, and what following
the feed costs that resource server.

    .venv/bin/python -m bench.revocation_latency [--revocations 200] [--no-listen]

Starts the service (`python -m tokenrota_server serve`, default settings apart from a cheap
argon2, which only makes the setup's logins faster) on a fresh database of the embedded Postgres,
and a resource server (`tests/resource_server.py`: `TokenVerifier` + `RevocationFollower`, library
defaults) in processes of their own. Background load: workers calling /profile and /refresh on
the service without pause. Each round logs one session out and polls the resource server every
5 ms with that session's access token until it answers 403; the latency is from sending
/logout to the first 403 (it includes /logout itself). `--no-listen` sets REVOCATION_LISTEN=false:
the polling fallback alone, as behind PgBouncer. Then the resource server's CPU time (psutil),
idle for 20 s and over a burst of revocations with no checks. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
import httpx
import psutil
from argon2 import PasswordHasher
from tokenrota_server.db import oauth_clients

from bench.__main__ import ROOT, free_port
from bench.databases import migrated_database

PASSWORD = "correct horse battery"
POLL_SECONDS = 0.005
BACKGROUND_WORKERS = 4


@contextlib.asynccontextmanager
async def process(
    arguments: list[str], environment: dict[str, str], url: str
) -> AsyncIterator[int]:
    """A subprocess answering 200 at `url`; its pid. Terminated (then killed) after."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        *arguments,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(400):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(url)).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{arguments} did not start")
        yield child.pid
    finally:
        child.terminate()
        try:
            await asyncio.wait_for(child.wait(), timeout=30)
        except TimeoutError:
            child.kill()
            await child.wait()


async def until(condition: Callable[[], Awaitable[bool]], pause: float) -> None:
    """Ask `condition` every `pause` seconds until it is true."""
    while True:
        if await condition():
            return
        await asyncio.sleep(pause)


async def caught_up(http: httpx.AsyncClient, resource: str) -> bool:
    return bool((await http.get(f"{resource}/follower")).json()["caught_up"])


async def refused(http: httpx.AsyncClient, resource: str, bearer: dict[str, str]) -> bool:
    return (await http.get(f"{resource}/whoami", headers=bearer)).status_code != 200


async def holds(http: httpx.AsyncClient, resource: str, entries: int) -> bool:
    return bool((await http.get(f"{resource}/follower")).json()["entries"] >= entries)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def background(service: str, email: str, stop: asyncio.Event, counts: list[int]) -> None:
    """/profile and /refresh on the service, back to back, until `stop`."""
    async with httpx.AsyncClient(base_url=service, timeout=30) as http:
        pair = (await http.post("/login", json={"email": email, "password": PASSWORD})).json()
        while not stop.is_set():
            answer = await http.get(
                "/profile", headers={"Authorization": f"Bearer {pair['access_token']}"}
            )
            refreshed = await http.post("/refresh", json={"refresh_token": pair["refresh_token"]})
            if answer.status_code == 200 and refreshed.status_code == 200:
                pair = refreshed.json()
                counts[0] += 2


async def run(arguments: argparse.Namespace) -> None:
    async with migrated_database() as database_url:
        client_id, client_secret = oauth_clients.new_client_id(), oauth_clients.new_client_secret()
        connection = await asyncpg.connect(database_url)
        await connection.execute(
            "INSERT INTO clients (client_id, name, secret_hash, scopes)"
            " VALUES ($1, 'rs', $2, '{revocations:read}')",
            client_id,
            PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(client_secret),
        )
        await connection.close()
        secret = secrets.token_urlsafe(48)
        service_port, resource_port = free_port(), free_port()
        service, resource = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{resource_port}"
        base = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL",)}
        service_environment = {
            **base,
            "ENV": "test",
            "DATABASE_URL": database_url,
            "PORT": str(service_port),
            "ACCESS_TOKEN_SECRET": secret,
            "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
            "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST": "8192",
            "ARGON2_PARALLELISM": "1",
            "LOGIN_EMAIL_MAX_ATTEMPTS": "100000",
            "LOGIN_IP_MAX_ATTEMPTS": "100000",
            "REVOCATION_LISTEN": "false" if arguments.no_listen else "true",
            # The service's own tokens carry the resource server's URI, the audience it pins.
            "TOKEN_AUDIENCE": resource,
        }
        resource_environment = {
            **base,
            "SERVICE_URL": service,
            "CLIENT_ID": client_id,
            "CLIENT_SECRET": client_secret,
            "ACCESS_TOKEN_SECRET": secret,
            "PORT": str(resource_port),
            "TOKEN_AUDIENCE": resource,
        }
        async with (
            process(["-m", "tokenrota_server", "serve"], service_environment, f"{service}/readyz"),
            process(
                ["-m", "tests.resource_server"], resource_environment, f"{resource}/follower"
            ) as resource_pid,
        ):
            await measure(service, resource, resource_pid, arguments)


async def measure(
    service: str, resource: str, resource_pid: int, arguments: argparse.Namespace
) -> None:
    email = f"bench-{secrets.token_hex(4)}@example.com"
    async with httpx.AsyncClient(timeout=60) as http:
        await http.post(f"{service}/register", json={"email": email, "password": PASSWORD})
        await until(lambda: caught_up(http, resource), 0.05)

        async def session() -> dict[str, Any]:
            answer = await http.post(
                f"{service}/login", json={"email": email, "password": PASSWORD}
            )
            pair: dict[str, Any] = answer.json()
            return pair

        pairs = [await session() for _ in range(arguments.revocations)]
        stop, counts = asyncio.Event(), [0]
        load = [
            asyncio.create_task(background(service, email, stop, counts))
            for _ in range(BACKGROUND_WORKERS)
        ]
        latencies: list[float] = []
        load_started = time.perf_counter()
        for pair in pairs:
            bearer = {"Authorization": f"Bearer {pair['access_token']}"}
            assert (await http.get(f"{resource}/whoami", headers=bearer)).status_code == 200
            sent = time.perf_counter()
            await http.post(f"{service}/logout", json={"refresh_token": pair["refresh_token"]})
            await until(partial(refused, http, resource, bearer), POLL_SECONDS)
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(random.uniform(0.0, 0.1))
        load_seconds = time.perf_counter() - load_started
        stop.set()
        await asyncio.gather(*load)

        mode = "polling only (REVOCATION_LISTEN=false)" if arguments.no_listen else "LISTEN/NOTIFY"
        print(f"revocation -> first 403 at the resource server, {mode}")
        print(
            f"  n={len(latencies)}  p50={statistics.median(latencies) * 1000:.0f} ms"
            f"  p90={percentile(latencies, 0.90) * 1000:.0f} ms"
            f"  p99={percentile(latencies, 0.99) * 1000:.0f} ms"
            f"  max={max(latencies) * 1000:.0f} ms"
        )
        print(f"  background load: {counts[0] / load_seconds:.0f} /profile+/refresh per s")

        follower = psutil.Process(resource_pid)
        await asyncio.sleep(2)
        idle_before, idle_started = follower.cpu_times(), time.perf_counter()
        await asyncio.sleep(arguments.idle_seconds)
        idle_after, idle_seconds = follower.cpu_times(), time.perf_counter() - idle_started
        idle_cpu = (idle_after.user + idle_after.system) - (idle_before.user + idle_before.system)
        burst = [await session() for _ in range(arguments.burst)]
        entries = (await http.get(f"{resource}/follower")).json()["entries"]
        burst_before = follower.cpu_times()
        for pair in burst:
            await http.post(f"{service}/logout", json={"refresh_token": pair["refresh_token"]})
        await until(lambda: holds(http, resource, entries + len(burst)), 0.2)
        burst_after = follower.cpu_times()
        burst_cpu = (burst_after.user + burst_after.system) - (
            burst_before.user + burst_before.system
        )
        print("resource server (follower) CPU")
        print(
            f"  idle: {idle_cpu / idle_seconds * 1000:.2f} ms CPU per s over {idle_seconds:.0f} s"
        )
        print(
            f"  revocations: {burst_cpu / len(burst) * 1000:.2f} ms CPU per revocation"
            f" ({len(burst)} logouts one by one, each its own feed answer)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revocations", type=int, default=200)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--no-listen", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
