"""The admin API's user listing at 100,000 users, and what roles cost the rotation statement.

Measures at the use-case layer (`admin.list_users`, on the service's pool; no HTTP),
on a fresh database of the embedded Postgres (or BENCH_DATABASE_URL's server) holding 100,000
users, a tenth of them with a role: the first page, a page deep in (a cursor past 90,000
users), and two email-prefix searches (11 matches, 1,111 matches). Then refresh-token
rotations per second with `sessions.rotate` (which reads the user's roles) against the same
statement without the roles' subqueries, as it was before roles. Numbers go to
docs/benchmarks.md; nothing here asserts speed.

    .venv/bin/python -m bench.admin_list [--users 100000] [--repeat 300] [--rounds 2]

`--users 0` skips the listing and times the rotations alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from tokenrota_server import admin
from tokenrota_server.db import pagination, sessions
from tokenrota_server.db.pool import Connection, create_pool

from bench.databases import migrated_database
from bench.rotation import child_of, seed

# The rotation statement as it was before roles: the same CTE, without the grants' subqueries.
_ROTATE_WITHOUT_ROLES = sessions._ROTATE.split("SELECT p.user_id")[0] + (  # noqa: S608
    "SELECT p.user_id, p.email, p.expires_at FROM parent p"
)


# The first version of the grants: two scalar subqueries, one per array.
_ROTATE_TWO_SUBQUERIES = _ROTATE_WITHOUT_ROLES.replace(
    "p.expires_at FROM parent p",
    "p.expires_at,"
    " coalesce((SELECT array_agg(g.role) FROM user_roles g WHERE g.user_id = p.user_id),"
    " '{}'::text[]) AS roles,"
    " coalesce((SELECT array_agg(DISTINCT granted.scope) FROM user_roles g"
    " JOIN roles r ON r.name = g.role CROSS JOIN unnest(r.scopes) AS granted(scope)"
    " WHERE g.user_id = p.user_id), '{}'::text[]) AS scopes FROM parent p",
)


async def populate(connection: Connection, count: int) -> None:
    """`count` users user1@example.com..., created a second apart; every tenth has a role."""
    await connection.execute(
        "INSERT INTO users (email, password_hash, created_at)"
        " SELECT 'user' || n || '@example.com', 'x', now() - make_interval(secs => $1 - n)"
        " FROM generate_series(1, $1) AS n",
        count,
    )
    await connection.execute("INSERT INTO roles (name, scopes) VALUES ('support', '{read}')")
    await connection.execute(
        "INSERT INTO user_roles (user_id, role)"
        " SELECT id, 'support' FROM users WHERE email LIKE '%0@example.com'"
    )
    await connection.execute("ANALYZE")


async def timings(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    await call()  # warm the statement cache
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def line(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"  {label:<44} median {statistics.median(ordered):6.2f} ms   p95 {p95:6.2f} ms"


async def listing(pool: asyncpg.Pool, users: int, repeat: int) -> None:
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT created_at, id FROM users ORDER BY created_at, id OFFSET $1 LIMIT 1",
            users * 9 // 10,
        )
    assert row is not None
    deep = pagination.encode_cursor("users:", [row["created_at"].isoformat(), str(row["id"])])

    async def page(prefix: str = "", cursor: str | None = None) -> None:
        found, _ = await admin.list_users(pool, email_prefix=prefix, cursor=cursor, limit=50)
        assert found

    print(f"GET /admin/users at {users} users, limit 50, {repeat} calls each (no HTTP):")
    print(line("first page", await timings(page, repeat)))
    print(line("deep page (cursor past 90%)", await timings(lambda: page(cursor=deep), repeat)))
    print(
        line(
            "email prefix 'user4242' (11 matches)", await timings(lambda: page("user4242"), repeat)
        )
    )
    print(
        line("email prefix 'user42' (1,111 matches)", await timings(lambda: page("user42"), repeat))
    )


async def rotations(pool: asyncpg.Pool, count: int, concurrency: int, statement: str) -> float:
    heads = await seed(pool, concurrency)
    with_roles = statement != _ROTATE_WITHOUT_ROLES
    if with_roles:
        async with pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO user_roles (user_id, role)"
                " SELECT DISTINCT s.user_id, 'support' FROM sessions s"
                " WHERE s.id = ANY($1::uuid[])",
                [session_id for session_id, _ in heads],
            )
    per_chain = count // concurrency

    async def walk(session_id: uuid.UUID, token: bytes) -> None:
        for _ in range(per_chain):
            child = child_of(token)
            now = datetime.now(UTC)
            async with pool.acquire() as connection:
                if statement == "service":
                    live = await sessions.rotate(
                        connection, token_digest=token, session_id=session_id, now=now, child=child
                    )
                    assert live is not None
                    assert live.grants.roles == ("support",)
                else:
                    row = await connection.fetchrow(
                        statement,
                        token,
                        session_id,
                        now,
                        child.digest,
                        child.issued_at,
                        child.expires_at,
                        None,  # idle_since ($7, since the idle timeout): none, the default
                    )
                    assert row is not None
            token = child.digest

    started = time.perf_counter()
    await asyncio.gather(*(walk(session_id, token) for session_id, token in heads))
    return per_chain * concurrency / (time.perf_counter() - started)


async def run(arguments: argparse.Namespace) -> None:
    async with migrated_database() as database_url:
        pool = await create_pool(database_url, min_size=4, max_size=16)
        try:
            started = time.perf_counter()
            async with pool.acquire() as connection:
                await populate(connection, arguments.users)
            print(f"populated {arguments.users} users in {time.perf_counter() - started:.1f} s")
            if arguments.users:
                await listing(pool, arguments.users, arguments.repeat)
            print(f"rotations/s, concurrency 16, {arguments.rotations} per round:")
            for round_number in range(arguments.rounds):
                for label, statement in (
                    ("without roles (before)", _ROTATE_WITHOUT_ROLES),
                    ("roles, two subqueries", _ROTATE_TWO_SUBQUERIES),
                    ("roles, the service's statement", "service"),
                ):
                    rate = await rotations(pool, arguments.rotations, 16, statement)
                    print(f"  round {round_number + 1}  {label:<32} {rate:8.0f}")
        finally:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.admin_list", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--rotations", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
