"""The benches' databases: a fresh database of its own for each run, migrated, dropped after.

Every bench works on a database nobody else uses, on BENCH_DATABASE_URL's server or the
embedded Postgres under `.data/` (started or joined; it stops when the last process using it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from tokenrota_server.db import schema
from tokenrota_server.db.pool import start_embedded

EMBEDDED_DATA = Path(__file__).resolve().parent.parent / ".data"


def bench_server() -> str:
    """The URL of the Postgres server the benches use: BENCH_DATABASE_URL, or the embedded one
    under `.data/`, started if it is not running (raises what `start_embedded` raises)."""
    return os.environ.get("BENCH_DATABASE_URL") or start_embedded(EMBEDDED_DATA)


@contextlib.asynccontextmanager
async def migrated_database(server_url: str | None = None) -> AsyncIterator[str]:
    """A fresh database on `server_url` (default: `bench_server()`), migrated to head; yields
    its URL and drops it on the way out whatever happened, a failed migration included.

    Raises asyncpg's errors if the server refuses the database, and the migration's error."""
    server_url = server_url or bench_server()
    name = f"bench_{uuid.uuid4().hex[:12]}"
    await _execute(server_url, f'CREATE DATABASE "{name}"')
    try:
        database_url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        await asyncio.to_thread(schema.upgrade, database_url)
        yield database_url
    finally:
        # FORCE: a pool or server the bench left behind must not keep its database alive.
        await _execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _execute(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
