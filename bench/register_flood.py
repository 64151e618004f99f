"""F2: a /register flood from one address while a real user logs in from another.

Starts `tokenrota serve` with production settings (argon2 at its defaults, the default
REGISTER_IP_MAX_ATTEMPTS) on a fresh database, behind a pretend proxy (TRUSTED_PROXIES=127.0.0.1,
so each side names its address in X-Forwarded-For). Measures the user's login latency alone,
then during FLOOD registrations sent at once from the flooding address, and counts the flood's
answers (all but the first REGISTER_IP_MAX_ATTEMPTS should be 429, costing no argon2 hash).
With --addresses N the flood comes from N addresses, each under its limit (a botnet): N times
as many registrations are accepted, each an argon2 hash.

    .venv/bin/python -m bench.register_flood [--flood 120] [--logins 10] [--addresses 1]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time

import httpx

from bench.__main__ import (
    free_port,
    production_environment,
    serving,
)
from bench.databases import migrated_database

PASSWORD = "correct horse battery staple"
# The flood's first address; with --addresses N, the N addresses from it up.
FLOODER_NETWORK = "203.0.113."
FIRST_FLOODER = 66
USER = {"X-Forwarded-For": "198.51.100.7"}


async def logins(client: httpx.AsyncClient, credentials: dict[str, str], count: int) -> list[float]:
    """`count` sequential logins of the user; their latencies, seconds."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.post("/login", json=credentials, headers=USER)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return samples


async def flood(
    client: httpx.AsyncClient, count: int, addresses: int = 1
) -> tuple[dict[int, int], float]:
    """`count` registrations at once from `addresses` addresses in turn: statuses counted, and
    seconds taken."""
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(
            client.post(
                "/register",
                json={
                    "email": f"flood-{index}-{secrets.token_hex(4)}@example.com",
                    "password": PASSWORD,
                },
                headers={
                    "X-Forwarded-For": f"{FLOODER_NETWORK}{FIRST_FLOODER + index % addresses}"
                },
            )
            for index in range(count)
        )
    )
    statuses: dict[int, int] = {}
    for answer in answers:
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    return statuses, time.perf_counter() - started


def describe(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms "
        f"(n={len(ordered)})"
    )


async def run(arguments: argparse.Namespace) -> None:
    async with migrated_database() as database_url:
        port = free_port()
        environment = production_environment(
            "https://flood.tokenrota.invalid",
            DATABASE_URL=database_url,
            PORT=str(port),
            TRUSTED_PROXIES="127.0.0.1",
        )
        async with serving(environment) as base_url:
            limits = httpx.Limits(max_connections=arguments.flood + 10)
            async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
                credentials = {"email": "ada@example.com", "password": PASSWORD}
                registered = await client.post("/register", json=credentials, headers=USER)
                assert registered.status_code == 201, registered.text
                await logins(client, credentials, 2)  # warm: connections, code paths
                alone = await logins(client, credentials, arguments.logins)
                flooding = asyncio.create_task(flood(client, arguments.flood, arguments.addresses))
                # The user keeps logging in, one after another, for as long as the flood lasts.
                during: list[float] = []
                while not flooding.done() or not during:
                    during += await logins(client, credentials, 1)
                statuses, flood_seconds = await flooding
    print(f"login alone:           {describe(alone)}")
    print(f"login during the flood: {describe(during)}")
    print(
        f"flood: {arguments.flood} registrations from {arguments.addresses} address(es) at once "
        "answered "
        f"{dict(sorted(statuses.items()))} in {flood_seconds:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.register_flood", description=__doc__)
    parser.add_argument("--flood", type=int, default=120)
    parser.add_argument("--logins", type=int, default=10)
    parser.add_argument("--addresses", type=int, default=1)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
