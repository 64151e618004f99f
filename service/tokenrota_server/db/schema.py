"""The database schema's version: migrate with alembic, and tell whether it is at head.

alembic's async env.py calls `asyncio.run`, so `upgrade` and `downgrade` are synchronous and
must be called from outside any running event loop (the CLI, a sync test fixture).
"""

from __future__ import annotations

from importlib import resources

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from tokenrota_server.db.pool import Connection


def alembic_config(database_url: str) -> Config:
    """alembic's settings, in memory: the scripts are package data, found wherever installed.

    No alembic.ini is read (a wheel has none); the one at the checkout's top is for people
    who run `alembic` by hand.
    """
    config = Config()
    # A wheel installs the package as plain files, so this is a real directory.
    scripts = resources.files("tokenrota_server.migrations")
    config.set_main_option("script_location", str(scripts))
    # Handed over in memory: a URL with a password never goes through ini interpolation.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


async def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None before the first migration."""
    try:
        value = await connection.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    return str(value) if value is not None else None
