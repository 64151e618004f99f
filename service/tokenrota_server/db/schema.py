"""The database schema's version: migrate with alembic, and tell whether it is at head.

alembic's async env.py calls `asyncio.run`, so `upgrade` and `downgrade` are synchronous and
must be called from outside any running event loop (the CLI, a sync test fixture).

Telling the head needs no alembic: each script's `revision` and `down_revision` are read from
its source. Importing alembic and SQLAlchemy and loading every script cost about half a second
of CPU, which every operator command paid, and `/readyz` on each probe.
"""

from __future__ import annotations

import ast
import functools
from importlib import resources
from typing import TYPE_CHECKING

import asyncpg

from tokenrota_server.db.pool import Connection

if TYPE_CHECKING:
    from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    """alembic's settings, in memory: the scripts are package data, found wherever installed.

    No alembic.ini is read (a wheel has none); the one at the checkout's top is for people
    who run `alembic` by hand.
    """
    from alembic.config import Config

    config = Config()
    # A wheel installs the package as plain files, so this is a real directory.
    scripts = resources.files("tokenrota_server.migrations")
    config.set_main_option("script_location", str(scripts))
    # Handed over in memory: a URL with a password never goes through ini interpolation.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


_CHAIN_NAMES = ("revision", "down_revision")


@functools.cache
def revisions() -> dict[str, str | None]:
    """Each migration's revision, and the revision it follows (None for the first)."""
    chain: dict[str, str | None] = {}
    for script in resources.files("tokenrota_server.migrations.versions").iterdir():
        if script.name.endswith(".py") and not script.name.startswith("_"):
            revision, follows = place_in_chain(script.read_text(encoding="utf-8"), script.name)
            chain[revision] = follows
    return chain


def place_in_chain(source: str, name: str) -> tuple[str, str | None]:
    """The `revision` and `down_revision` of the script `source` (`name`, for errors).

    Only its lines that start with one of those names are parsed: parsing every script whole
    cost every command about 15 ms of CPU. A value over several lines does not parse alone;
    the whole script is parsed then.
    """
    lines = [line for line in source.splitlines() if line.startswith(_CHAIN_NAMES)]
    try:
        statements = ast.parse("\n".join(lines)).body
    except SyntaxError:
        statements = ast.parse(source).body
    names: dict[str, object] = {}
    for statement in statements:
        # `revision = "0002"`, or annotated as alembic's own template writes it.
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in _CHAIN_NAMES:
                names[target.id] = ast.literal_eval(value)
    revision, follows = names["revision"], names["down_revision"]
    # One chain, as alembic's script template writes it: a merge would be a tuple here.
    if not isinstance(revision, str) or not (follows is None or isinstance(follows, str)):
        raise ValueError(f"{name}: revision and down_revision must be strings")
    return revision, follows


def head_revision() -> str:
    """The revision no other migration follows."""
    chain = revisions()
    heads = set(chain) - set(chain.values())
    if len(heads) != 1:
        raise ValueError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


async def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None before the first migration."""
    try:
        value = await connection.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    return str(value) if value is not None else None
