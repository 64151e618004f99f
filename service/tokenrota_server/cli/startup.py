"""Start-up: what a command needs before it runs, and a one-line reason when it is missing.

A command first resolves its settings (`settings_from_environment`), then checks what it will
use: the database answers and is at the schema's head (`check_database`), the port is free
(`check_port`). Each check raises `StartupError`, whose message is one line naming what failed
and what to do, with the database URL's password masked; the command line prints it and exits 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import socket
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from tokenrota_server.config import Settings, ensure_development_secrets, load_settings
from tokenrota_server.db.pool import connect
from tokenrota_server.errors import ConfigError

# What asyncpg.connect raises when it cannot open a session: the network (OSError, timeouts),
# the server's refusal (PostgresError), or a URL it cannot use (InterfaceError, ValueError,
# OverflowError for a port past 65535).
_CONNECT_FAILURES = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ValueError,
    OverflowError,
)


class StartupError(Exception):
    """A command cannot start; the message is one line for stderr and holds no password."""


def settings_from_environment(environ: dict[str, str]) -> Settings:
    """Settings from `environ`, completed in place for the processes this one starts.

    In development, missing secrets are read from (or generated into) `DATA_DIR/secrets.env`;
    with no `DATABASE_URL`, the embedded Postgres is started. Each is announced on stderr once,
    when it is made, not on every command. Both land in `environ`, so
    workers given it neither generate secrets nor start a Postgres of their own. Raises
    `ConfigError` for a setting that is refused, `StartupError` if the Postgres cannot start.
    """
    data_dir = Path(environ.get("DATA_DIR", ".data"))
    existed = (data_dir / "secrets.env").exists()
    used = ensure_development_secrets(environ, data_dir)
    if used is not None and not existed:
        # Said once, when they are made: every later command reads the same file.
        print(f"development secrets generated into {used} (mode 0600)", file=sys.stderr)
    settings = load_settings(environ)
    if settings.database_url is not None:
        return settings
    if settings.is_production:
        raise ConfigError("ENV=production needs DATABASE_URL")
    from tokenrota_server.db.pool import start_embedded

    created = not (settings.data_dir / "postgres" / "PG_VERSION").exists()
    try:
        url = start_embedded(settings.data_dir)
    except Exception as error:
        # Whatever initdb or pg_ctl tripped on, there is no database: say so in one line.
        raise StartupError(
            f"cannot start the embedded PostgreSQL under {settings.data_dir}/postgres: "
            f"{_first_line(error)}; see its log there, or set DATABASE_URL"
        ) from error
    if created:
        print(f"using the embedded PostgreSQL under {settings.data_dir}/postgres", file=sys.stderr)
    environ["DATABASE_URL"] = url
    return dataclasses.replace(settings, database_url=url)


def check_mail_delivery(settings: Settings) -> None:
    """In production, refuse to serve without a way to send mail and pages to link to.

    Raises `ConfigError`: without SMTP_URL the reset and verification messages would go to
    files nobody reads, and without the URLs their links would lead to the (disabled) demo.
    """
    if not settings.is_production:
        return
    missing = [
        name
        for name, value in (
            ("SMTP_URL", settings.smtp_url),
            ("PASSWORD_RESET_URL", settings.password_reset_url),
            ("EMAIL_VERIFICATION_URL", settings.email_verification_url),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(
            f"ENV=production needs {', '.join(missing)} (mail for password resets and "
            "email verification: an SMTP server and the pages its links open)"
        )


def check_database(url: str, *, at_head: bool, variable: str, timeout: float) -> bool:
    """Connect to `url` (the setting `variable`, named in what to check), waiting at most
    `timeout` seconds (DATABASE_CONNECT_TIMEOUT), and read its schema revision; whether it is
    at this version's head.

    Raises `StartupError` when the database cannot be reached or refuses the connection, when
    it was migrated by a newer version (a revision this one does not know), and, with
    `at_head`, when it is not migrated to this version's head.
    """
    from tokenrota_server.db import schema

    revision = asyncio.run(_read_revision(url, variable, timeout))
    if revision is not None and revision not in schema.revisions():
        raise StartupError(
            f"the database at {masked_url(url)} is at revision {revision}, which this version "
            "of tokenrota does not know (a newer version migrated it); run that version"
        )
    head = schema.head_revision()
    if at_head and revision != head:
        found = revision or "no revision"
        raise StartupError(
            f"the database at {masked_url(url)} is not migrated to this version (it is at "
            f"{found}, this version needs {head}); run `tokenrota migrate` first"
        )
    return revision == head


def migrate_to_head(url: str, *, variable: str, timeout: float) -> None:
    """Check the database at `url` as `check_database` does, then migrate it to head unless
    it is there already: alembic, SQLAlchemy and the scripts cost about half a second of CPU,
    which `serve --migrate` would pay on every start."""
    if check_database(url, at_head=False, variable=variable, timeout=timeout):
        print("the database is at this version's head: nothing to migrate", file=sys.stderr)
    else:
        migrate(url)


def migrate(url: str) -> None:
    """Migrate the database at `url` to head; `StartupError` if a migration fails.

    Each migration runs in its own transaction: a failed one leaves the database at the last
    revision that completed.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from tokenrota_server.db import schema

    try:
        schema.upgrade(url)
    except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        raise StartupError(
            f"migrating the database at {masked_url(url)} failed: "
            f"{_scrubbed(_first_line(_root_cause(error)), url)}; fix that and run it again "
            "(the migrations that completed stay)"
        ) from error


def check_port(host: str, port: int) -> None:
    """Bind `host:port` as uvicorn will, then let it go; `StartupError` if that fails.

    The socket is released before uvicorn binds again: another process could take the port
    in between, and uvicorn then reports it itself.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    try:
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except socket.gaierror:
        raise StartupError(
            f"cannot listen on {where}: unknown host {host}; give an address of this machine "
            "(--host or HOST)"
        ) from None
    except OverflowError:
        raise StartupError(f"cannot listen on {where}: a port is 0 to 65535") from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            hint = "stop the other server, or choose another port (--port or PORT)"
        elif error.errno == errno.EACCES:
            hint = "ports below 1024 need privileges; choose another port (--port or PORT)"
        else:
            hint = "give an address of this machine (--host or HOST)"
        reason = (error.strerror or str(error)).lower()
        raise StartupError(f"cannot listen on {where}: {reason}; {hint}") from None


def masked_url(url: str) -> str:
    """`url` with its password, in the user part or the query, replaced by `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        user_part, _, host_part = netloc.rpartition("@")
        netloc = f"{user_part.partition(':')[0]}:***@{host_part}"
    query = "&".join(
        "password=***" if item.partition("=")[0].lower() == "password" else item
        for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def _read_revision(url: str, variable: str, connect_timeout: float) -> str | None:
    from tokenrota_server.db import schema

    try:
        connection = await connect(url, timeout=connect_timeout)
    except _CONNECT_FAILURES as error:
        raise StartupError(_connection_failure(url, error, variable, connect_timeout)) from None
    try:
        return await schema.current_revision(connection)
    except asyncpg.PostgresError as error:
        raise StartupError(
            f"cannot read the schema revision of the database at {masked_url(url)}: "
            f"{_first_line(error)}"
        ) from None
    finally:
        await connection.close()


def _connection_failure(url: str, error: BaseException, variable: str, timeout: float) -> str:
    """One line saying why `url` could not be connected to (within `timeout` seconds), and
    what to check in `variable` (the setting it came from: DATABASE_URL, or
    DATABASE_DIRECT_URL when that is set)."""
    if isinstance(error, socket.gaierror):
        reason = f"unknown host {urlsplit(url).hostname}"
        hint = f"check the host in {variable}"
    elif isinstance(error, ConnectionRefusedError):
        reason = "connection refused"
        hint = f"is PostgreSQL running and listening there? check {variable}"
    elif isinstance(error, FileNotFoundError):
        reason = "no PostgreSQL socket there"
        hint = f"is PostgreSQL running? check the socket directory (host) in {variable}"
    elif isinstance(error, TimeoutError):
        reason = f"no answer within {timeout:g} seconds (DATABASE_CONNECT_TIMEOUT)"
        hint = f"check the host and port in {variable}, and the network between"
    elif isinstance(error, asyncpg.InvalidCatalogNameError):
        reason = _first_line(error)
        hint = f"create it, or fix the database name in {variable}"
    elif isinstance(
        error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        reason = _first_line(error)
        hint = f"check the user and password in {variable}"
    else:
        reason = _first_line(error)
        hint = f"check {variable}"
    return f"cannot connect to the database at {masked_url(url)}: {_scrubbed(reason, url)}; {hint}"


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception SQLAlchemy and alembic wrapped (the driver's own)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    # Without its full stop: the line goes on with what to do.
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def _scrubbed(message: str, url: str) -> str:
    """`message` without the password of `url`, should a library have quoted it."""
    password = urlsplit(url).password
    if not password:
        return message
    for form in {password, unquote(password)}:
        message = message.replace(form, "***")
    return message
