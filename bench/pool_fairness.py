"""How long requests wait for a pool connection: asyncpg's own queue against the service's.

32 tasks share a pool of 10 connections (the service's default size), as 32 wrk connections do
under load: each in a loop acquires, runs /profile's one query, releases, and spends a little
CPU (the rest of a request) before asking again. The same load runs on a pool with asyncpg's
stock queue and on one with the service's `FirstComeFirstServed`, interleaved, on one
database; the report gives each round's p50, p99 and worst wait for a connection, in ms.

    .venv/bin/python -m bench.pool_fairness
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import asyncpg
from tokenrota_server.db import pool as service_pool

from bench.databases import migrated_database

TASKS = 32
POOL_SIZE = 10
SECONDS = 3.0
ROUNDS = 3
QUERY = (
    "SELECT u.id, u.email, u.created_at FROM sessions s JOIN users u ON u.id = s.user_id"
    " WHERE s.id = $1 AND u.id = $2 AND s.revoked_at IS NULL AND s.expires_at > now()"
    " AND u.disabled_at IS NULL"
)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def busy(seconds: float) -> None:
    """The CPU the rest of a request takes (token check, response, log line)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def waits(pool: Any) -> list[float]:
    """Each acquisition's wait, in seconds, over SECONDS of TASKS tasks looping."""
    recorded: list[float] = []
    stop = time.perf_counter() + SECONDS
    ids = (uuid.uuid4(), uuid.uuid4())

    async def worker() -> None:
        while time.perf_counter() < stop:
            asked = time.perf_counter()
            async with pool.acquire() as connection:
                recorded.append(time.perf_counter() - asked)
                await connection.fetchrow(QUERY, *ids)
            busy(0.0004)
            await asyncio.sleep(0)  # the next request on this connection arrives later

    await asyncio.gather(*(worker() for _ in range(TASKS)))
    return recorded


async def main() -> None:
    async with migrated_database() as url:
        fair = await service_pool.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        stock = await asyncpg.create_pool(
            url,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            connection_class=service_pool._PooledConnection,
        )
        pools = {"asyncpg's queue": stock, "first come, first served": fair}
        results: dict[str, list[tuple[float, float, float, int]]] = {}
        for round_number in range(ROUNDS):
            order = list(pools) if round_number % 2 == 0 else list(pools)[::-1]
            for label in order:
                samples = await waits(pools[label])
                results.setdefault(label, []).append(
                    (
                        statistics.median(samples) * 1000,
                        percentile(samples, 0.99) * 1000,
                        max(samples) * 1000,
                        len(samples),
                    )
                )
        print(f"wait for a connection, {TASKS} tasks on {POOL_SIZE} connections, ms:")
        for label, rows in results.items():
            for p50, p99, worst, count in rows:
                print(
                    f"  {label:<26} p50 {p50:6.2f}  p99 {p99:7.2f}  worst {worst:7.2f}"
                    f"  ({count} acquisitions)"
                )
        await fair.close()
        await stock.close()


if __name__ == "__main__":
    asyncio.run(main())
