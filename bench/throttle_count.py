"""What the throttle's count costs the database, under its limit and past it.

On a fresh database of the embedded Postgres (or BENCH_DATABASE_URL's server), straight through
`tokenrota_server.db.throttle`, no HTTP:

- under the limit (the common path): one login's count (an email and an address) and its
  commit, one after another on one connection, each for a new email: the median;
- past the limit: FLOOD registrations' counts at once on a pool of 10 connections, all for one
  address already over its limit (a refused flood): how long they take together, and the WAL
  written per count (none: a key over its limit is read, not written).

    .venv/bin/python -m bench.throttle_count [--rounds 3] [--counts 300] [--flood 120]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from datetime import UTC, datetime

import asyncpg
from starlette.datastructures import Secret
from tokenrota_server.config import Settings
from tokenrota_server.db import throttle
from tokenrota_server.db.pool import Connection

from bench.databases import migrated_database

FLOODER = "203.0.113.66"


async def under_the_limit(connection: Connection, settings: Settings, counts: int) -> float:
    """The median seconds of one login's count and its commit, each for a new email."""
    samples = []
    for _ in range(counts):
        email = f"{secrets.token_hex(8)}@example.com"
        started = time.perf_counter()
        async with connection.transaction():
            await throttle.count_attempt(
                connection, settings, email=email, ip="198.51.100.7", now=datetime.now(UTC)
            )
        samples.append(time.perf_counter() - started)
    await connection.execute("DELETE FROM login_attempts WHERE scope IN ('email', 'ip')")
    return statistics.median(samples)


async def past_the_limit(pool: asyncpg.Pool, settings: Settings, flood: int) -> tuple[float, int]:
    """`flood` registrations' counts at once from an address over its limit: seconds taken,
    and bytes of WAL written (by anyone on the server) meanwhile."""

    async def count() -> None:
        async with pool.acquire() as connection:
            refused = await throttle.count_registration(
                connection, settings, ip=FLOODER, now=datetime.now(UTC)
            )
            assert refused is not None

    position = await pool.fetchval("SELECT pg_current_wal_lsn()::text")
    started = time.perf_counter()
    await asyncio.gather(*(count() for _ in range(flood)))
    seconds = time.perf_counter() - started
    written = await pool.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", position
    )
    return seconds, int(written)


async def run(arguments: argparse.Namespace) -> None:
    settings = Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
    )
    async with migrated_database() as database_url:
        pool = await asyncpg.create_pool(database_url, min_size=10, max_size=10)
        try:
            # The flooding address at one past its limit in a window just begun.
            await pool.execute(
                "INSERT INTO login_attempts (scope, key_digest, attempts, window_started_at)"
                " VALUES ($1, $2, $3, now())",
                throttle.REGISTER_SCOPE,
                throttle.address_key(FLOODER),
                settings.register_ip_max_attempts + 1,
            )
            # Warm, not reported: each connection prepares its statements on first use.
            async with pool.acquire() as connection:
                await under_the_limit(connection, settings, 20)
            await past_the_limit(pool, settings, arguments.flood)
            for round_number in range(1, arguments.rounds + 1):
                async with pool.acquire() as connection:
                    median = await under_the_limit(connection, settings, arguments.counts)
                seconds, written = await past_the_limit(pool, settings, arguments.flood)
                print(
                    f"round {round_number}: under the limit {median * 1000:.3f} ms per count "
                    f"and commit (median of {arguments.counts}); {arguments.flood} past it at "
                    f"once {seconds * 1000:.0f} ms, WAL {written / arguments.flood:.0f} B each"
                )
        finally:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throttle_count", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--counts", type=int, default=300)
    parser.add_argument("--flood", type=int, default=120)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
