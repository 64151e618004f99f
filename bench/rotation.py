"""The rotation statement against the same work in several statements, and the pool's reset.

Measures, side by side in one run on one database, refresh-token rotations per second at the
database layer (no HTTP):
  - `sessions.rotate`: one statement (CTE) per rotation, on the service's pool (no reset);
  - the same work as four statements in a transaction (spend, check, insert child, touch);
  - `sessions.rotate` again on a pool that runs asyncpg's default reset on every release.

    .venv/bin/python -m bench.rotation [--rotations 4000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from tokenrota_server.db import sessions
from tokenrota_server.db.pool import Connection, create_pool
from tokenrota_server.db.sessions import NewToken

from bench.databases import migrated_database

Rotate = Callable[[Connection, bytes, uuid.UUID, bytes], Awaitable[bool]]


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def child_of(token_digest: bytes) -> NewToken:
    now = datetime.now(UTC).replace(microsecond=0)
    return NewToken(digest(token_digest.hex()), now, now + timedelta(days=7))


async def one_statement(
    connection: Connection, token_digest: bytes, session_id: uuid.UUID, _: bytes
) -> bool:
    now = datetime.now(UTC)
    live = await sessions.rotate(
        connection,
        token_digest=token_digest,
        session_id=session_id,
        now=now,
        child=child_of(token_digest),
    )
    return live is not None


async def several_statements(
    connection: Connection, token_digest: bytes, session_id: uuid.UUID, _: bytes
) -> bool:
    now = datetime.now(UTC)
    child = child_of(token_digest)
    async with connection.transaction():
        parent = await connection.fetchrow(
            "UPDATE refresh_tokens SET used_at = $3 WHERE token_digest = $1 AND session_id = $2"
            " AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $3 RETURNING id",
            token_digest,
            session_id,
            now,
        )
        if parent is None:
            return False
        live = await connection.fetchrow(
            "SELECT s.user_id, u.email FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2"
            " AND u.disabled_at IS NULL",
            session_id,
            now,
        )
        if live is None:
            return False
        await connection.execute(
            "INSERT INTO refresh_tokens"
            " (session_id, parent_id, token_digest, issued_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            session_id,
            parent["id"],
            child.digest,
            child.issued_at,
            child.expires_at,
        )
        await connection.execute(
            "UPDATE sessions SET last_used_at = $2 WHERE id = $1", session_id, now
        )
    return True


async def seed(pool: asyncpg.Pool, chains: int) -> list[tuple[uuid.UUID, bytes]]:
    """One user, `chains` sessions, each with one live refresh token."""
    now = datetime.now(UTC)
    async with pool.acquire() as connection:
        user_id = await connection.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
            f"bench-{uuid.uuid4().hex[:8]}@example.com",
        )
        heads = []
        for _ in range(chains):
            session_id, token = uuid.uuid4(), digest(uuid.uuid4().hex)
            await sessions.create_session(
                connection,
                session_id=session_id,
                user_id=user_id,
                now=now,
                expires_at=now + timedelta(days=30),
                first_token=NewToken(token, now, now + timedelta(days=7)),
                user_agent=None,
                ip=None,
            )
            heads.append((session_id, token))
    return heads


async def rotations_per_second(
    pool: asyncpg.Pool, rotate: Rotate, rotations: int, concurrency: int
) -> float:
    heads = await seed(pool, concurrency)
    per_chain = rotations // concurrency

    async def walk(session_id: uuid.UUID, token: bytes) -> None:
        for _ in range(per_chain):
            async with pool.acquire() as connection:
                assert await rotate(connection, token, session_id, b"")
            token = child_of(token).digest

    started = time.perf_counter()
    await asyncio.gather(*(walk(session_id, token) for session_id, token in heads))
    return per_chain * concurrency / (time.perf_counter() - started)


async def run(arguments: argparse.Namespace) -> None:
    async with migrated_database() as database_url:
        size = arguments.concurrency
        lean = await create_pool(database_url, min_size=size, max_size=size)
        resetting = await asyncpg.create_pool(database_url, min_size=size, max_size=size)
        try:
            cases: list[tuple[str, asyncpg.Pool, Rotate]] = [
                ("one statement, no reset", lean, one_statement),
                ("four statements, no reset", lean, several_statements),
                ("one statement, asyncpg reset", resetting, one_statement),
            ]
            print(f"rotations/s, concurrency {size}, {arguments.rotations} rotations per round:")
            for round_number in range(arguments.rounds):
                # Interleaved rounds, so that a noisy neighbour hurts every case alike.
                for label, pool, rotate in cases:
                    rate = await rotations_per_second(
                        pool, rotate, arguments.rotations, arguments.concurrency
                    )
                    print(f"  round {round_number + 1}  {label:<30} {rate:8.0f}")
        finally:
            await lean.close()
            await resetting.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rotation", description=__doc__)
    parser.add_argument("--rotations", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
