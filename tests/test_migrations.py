"""Every migration has a working downgrade: 0003 (login_attempts) down to 0002 and up again."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from service import schema
from tests.conftest import database_url_for


async def _tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def test_login_attempts_migration_downgrades_and_upgrades(postgres_url: str) -> None:
    """Down to 0002 drops login_attempts and nothing else; up again restores it."""
    name = f"migrate_{uuid.uuid4().hex[:12]}"
    url = database_url_for(postgres_url, name)
    asyncio.run(_execute(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        schema.upgrade(url)
        at_head = asyncio.run(_tables(url))

        schema.downgrade(url, "0002")
        at_0002 = asyncio.run(_tables(url))
        schema.upgrade(url)

        assert "login_attempts" in at_head
        assert at_head - at_0002 == {"login_attempts"}
        assert asyncio.run(_tables(url)) == at_head
    finally:
        asyncio.run(_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
