"""F2: a /register flood from one address while a real user logs in from another.

Starts `tokenrota serve` with production settings (argon2 at its defaults, the default
REGISTER_IP_MAX_ATTEMPTS) on a fresh database, behind a pretend proxy (TRUSTED_PROXIES=127.0.0.1,
so each side names its address in X-Forwarded-For). Measures the user's login latency alone,
then during FLOOD registrations sent at once from the flooding address, and counts the flood's
answers (all but the first REGISTER_IP_MAX_ATTEMPTS should be 429, costing no argon2 hash).
With --addresses N the flood comes from N addresses, each under its limit (a botnet): N times
as many registrations are accepted, each an argon2 hash. With --exhausted the flooding
addresses start the flood already at their limit, so every registration of it is refused 429
and none costs argon2: what is left is the cost of refusing. With --waits, what the database's
other sessions are doing is sampled from pg_stat_activity every 5 ms while the flood lasts
(state and wait event, counted): whether a request waits for a row lock, a WAL flush or nothing.
With --invalid the flood's emails are not valid, so each is refused 422 before the database is
asked anything: what answering a flood costs with no database work at all, to compare with.
With --path login the flood is of logins with wrong passwords for made-up emails (credential
stuffing) instead, against LOGIN_IP_MAX_ATTEMPTS.

    .venv/bin/python -m bench.register_flood [--flood 120] [--logins 10] [--addresses 1]
        [--exhausted] [--invalid] [--waits] [--path register|login]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import secrets
import statistics
import time

import asyncpg
import httpx
import psutil
from tokenrota_server.config import Settings
from tokenrota_server.db import throttle

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
    client: httpx.AsyncClient,
    count: int,
    addresses: int = 1,
    *,
    invalid: bool = False,
    path: str = "register",
) -> tuple[dict[int, int], float]:
    """`count` registrations (or logins with a wrong password) at once from `addresses`
    addresses in turn (with emails that are not valid if `invalid`): statuses counted, and
    seconds taken."""
    at = "-at-" if invalid else "@"
    password = PASSWORD if path == "register" else "a wrong guess"
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(
            client.post(
                f"/{path}",
                json={
                    "email": f"flood-{index}-{secrets.token_hex(4)}{at}example.com",
                    "password": password,
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


async def exhaust(database_url: str, addresses: int, path: str) -> None:
    """Put each flooding address at its limit for `path` in a window just begun, as if it had
    registered REGISTER_IP_MAX_ATTEMPTS times (or tried LOGIN_IP_MAX_ATTEMPTS passwords)
    already (the default limits)."""
    scope, limit = (
        (throttle.REGISTER_SCOPE, Settings.register_ip_max_attempts)
        if path == "register"
        else (throttle.ADDRESS_SCOPE, Settings.login_ip_max_attempts)
    )
    connection = await asyncpg.connect(database_url)
    try:
        await connection.executemany(
            "INSERT INTO login_attempts (scope, key_digest, attempts, window_started_at)"
            " VALUES ($1, $2, $3, now())",
            [
                (
                    scope,
                    throttle.address_key(f"{FLOODER_NETWORK}{FIRST_FLOODER + index}"),
                    limit,
                )
                for index in range(addresses)
            ],
        )
    finally:
        await connection.close()


# The other sessions of the bench's database, as a sample: their state and wait event.
_ACTIVITY = """
    SELECT state, coalesce(wait_event_type || ':' || wait_event, '-') AS waiting
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
"""


async def sample_waits(database_url: str, until: asyncio.Task[object]) -> collections.Counter[str]:
    """Until `until` is done, every 5 ms: each session's "state wait_event", counted."""
    seen: collections.Counter[str] = collections.Counter()
    connection = await asyncpg.connect(database_url)
    try:
        while not until.done():
            for row in await connection.fetch(_ACTIVITY):
                seen[f"{row['state']} {row['waiting']}"] += 1
            await asyncio.sleep(0.005)
    finally:
        await connection.close()
    return seen


async def wal_position(database_url: str) -> str:
    """The server's current WAL position (an LSN), to tell how much WAL a stretch wrote."""
    connection = await asyncpg.connect(database_url)
    try:
        return str(await connection.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await connection.close()


async def wal_since(database_url: str, position: str) -> int:
    """Bytes of WAL written (by anyone on the server) since `position`."""
    connection = await asyncpg.connect(database_url)
    try:
        return int(
            await connection.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", position
            )
        )
    finally:
        await connection.close()


def server_process() -> psutil.Process:
    """The `tokenrota serve` this bench started: its one child running tokenrota_server."""
    for child in psutil.Process().children():
        if "tokenrota_server" in child.cmdline():
            return child
    raise RuntimeError("no tokenrota serve among this process's children")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


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
                if arguments.exhausted:
                    await exhaust(database_url, arguments.addresses, arguments.path)
                server = server_process()
                cpu_before = cpu_seconds(server)
                wal_before = await wal_position(database_url)
                flooding = asyncio.create_task(
                    flood(
                        client,
                        arguments.flood,
                        arguments.addresses,
                        invalid=arguments.invalid,
                        path=arguments.path,
                    )
                )
                sampling = (
                    asyncio.create_task(sample_waits(database_url, flooding))
                    if arguments.waits
                    else None
                )
                # The user keeps logging in, one after another, for as long as the flood lasts.
                during: list[float] = []
                while not flooding.done() or not during:
                    during += await logins(client, credentials, 1)
                statuses, flood_seconds = await flooding
                server_cpu = cpu_seconds(server) - cpu_before
                wal_bytes = await wal_since(database_url, wal_before)
                waits = await sampling if sampling is not None else None
    print(f"login alone:           {describe(alone)}")
    print(f"login during the flood: {describe(during)}")
    print(
        f"flood: {arguments.flood} {arguments.path}s from {arguments.addresses} address(es) "
        "at once answered "
        f"{dict(sorted(statuses.items()))} in {flood_seconds:.2f} s"
    )
    print(
        f"server CPU while it lasted: {server_cpu * 1000:.0f} ms, logins included "
        f"({server_cpu * 1000 / arguments.flood:.1f} ms per flood request)"
    )
    print(f"WAL written while it lasted: {wal_bytes / 1024:.0f} KiB, logins included")
    if waits is not None:
        print("sessions sampled during the flood (state wait_event: samples):")
        for waiting, count in waits.most_common():
            print(f"  {waiting}: {count}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.register_flood", description=__doc__)
    parser.add_argument("--flood", type=int, default=120)
    parser.add_argument("--logins", type=int, default=10)
    parser.add_argument("--addresses", type=int, default=1)
    parser.add_argument("--exhausted", action="store_true")
    parser.add_argument("--invalid", action="store_true")
    parser.add_argument("--waits", action="store_true")
    parser.add_argument("--path", choices=["register", "login"], default="register")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
