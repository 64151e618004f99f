"""What the library's test fixtures (`tokenrota.testing`) need of the server, in one place.

The library imports this module and no other of the server, so the server's modules may move
without touching it. The app and alembic are imported only when asked for: the app's metrics
read their environment at import, and alembic takes a good part of a second.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from datetime import datetime
from uuid import UUID

import asyncpg
from starlette.applications import Starlette

from tokenrota_server import totp
from tokenrota_server.auth import TokenPair
from tokenrota_server.config import Settings
from tokenrota_server.db import oauth_clients, roles
from tokenrota_server.db.pool import start_embedded
from tokenrota_server.db.sessions import Strength
from tokenrota_server.mailer import message_summary, messages_in_mailbox
from tokenrota_server.passwords import Passwords
from tokenrota_server.tokens import TokenCodec

# Where a `Settings()` keeps its files when no one says: relative to the working directory.
DEFAULT_DATA_DIR = next(each.default for each in fields(Settings) if each.name == "data_dir")


def totp_step(at: datetime) -> int:
    """The TOTP time step (RFC 6238 counter) of `at`."""
    return totp.step_of(at)


def totp_code(secret: str, step: int) -> str:
    """The code of a TOTP `secret` at time step `step`."""
    return totp.code_at(secret, step)


def create_app(settings: Settings) -> Starlette:
    """The app `settings` describe, as `tokenrota serve` would build it."""
    from tokenrota_server.app import create_app

    return create_app(settings)


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with production's limits (head cap, read deadlines)."""
    from tokenrota_server.http.limits import HttpLimits, protocol_class

    return protocol_class(HttpLimits.of(settings))


def migrate(database_url: str) -> None:
    """Migrate the database to the schema's head. Synchronous, outside any event loop:
    alembic's env.py runs its own."""
    from tokenrota_server.db import schema

    schema.upgrade(database_url)


async def insert_client(
    connection: asyncpg.Connection,
    passwords: Passwords,
    *,
    client_id: str,
    client_secret: str,
    name: str,
    scopes: tuple[str, ...],
    now: datetime,
) -> None:
    """Write an OAuth client whose secret is `client_secret` (kept only as its argon2 hash)."""
    secret_hash = await passwords.hash(client_secret)
    await oauth_clients.insert_client(
        connection,
        client_id=client_id,
        name=name,
        secret_hash=secret_hash,
        scopes=scopes,
        now=now,
    )


async def grant_operator_role(
    connection: asyncpg.Connection, *, user_id: str, role: str, now: datetime
) -> None:
    """Give a user `role`, first created with the scope `admin` alone if no role has its name."""
    async with connection.transaction():
        if not any(each.name == role for each in await roles.list_roles(connection)):
            await roles.put_role(connection, name=role, scopes=("admin",), now=now)
        await roles.grant_role(connection, UUID(user_id), role)


__all__ = [
    "DEFAULT_DATA_DIR",
    "Passwords",
    "Settings",
    "Strength",
    "TokenCodec",
    "TokenPair",
    "create_app",
    "grant_operator_role",
    "http_protocol",
    "insert_client",
    "message_summary",
    "messages_in_mailbox",
    "migrate",
    "start_embedded",
    "totp_code",
    "totp_step",
]
