"""Start-up failures: every command answers in one line on stderr, never a traceback.

Each case runs the real command line (`python -m tokenrota_server`, once the `tokenrota`
script) against a real Postgres, or a real socket that is closed, taken or silent.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tokenrota.testing import database_url_for, execute
from tokenrota_server.cli.startup import masked_url
from tokenrota_server.db import schema

from tests.cli.test_config import run_cli
from tests.conftest import PROJECT_ROOT
from tests.processes import free_port

PASSWORD = "S3cret-db-pw"
EVERY_COMMAND = [
    ("serve",),
    ("migrate",),
    ("create-user", "someone@example.com"),
    ("disable-user", "someone@example.com"),
    ("purge",),
    ("create-client", "reports"),
    ("rotate-client-secret", "some-client-id"),
    ("disable-client", "some-client-id"),
    ("list-clients",),
]


def environment(tmp_path: Path, database_url: str) -> dict[str, str]:
    """Complete settings, so no development-secrets notice joins the one line."""
    return {
        "ENV": "test",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
    }


def with_login(url: str, user: str, password: str = PASSWORD) -> str:
    """`url` logging in as `user` with `password` (the test server trusts its socket)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def assert_one_line(result: subprocess.CompletedProcess[str], *, status: int, says: str) -> None:
    """Exit `status`, and stderr exactly one `error:` line containing `says`, no password."""
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert says in lines[0]
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


async def cli(*arguments: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *arguments, environ=environ)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    return free_port()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections (in the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
async def empty_database(postgres_url: str) -> AsyncIterator[str]:
    """The URL of a database that exists but was never migrated."""
    name = f"empty_{uuid.uuid4().hex[:16]}"
    await execute(postgres_url, f'CREATE DATABASE "{name}"')
    yield database_url_for(postgres_url, name)
    await execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def unprivileged_role(postgres_url: str) -> AsyncIterator[str]:
    """A role that may log in but not create tables in `public` (PostgreSQL 15 and later)."""
    name = f"limited_{uuid.uuid4().hex[:12]}"
    await execute(postgres_url, f'CREATE ROLE "{name}" LOGIN')
    yield name
    await execute(postgres_url, f'DROP ROLE IF EXISTS "{name}"')


# -- the database cannot be reached -----------------------------------------------------------


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=[c[0] for c in EVERY_COMMAND])
async def test_every_command_reports_a_refused_connection_in_one_line(
    tmp_path: Path, closed_port: int, command: tuple[str, ...]
) -> None:
    url = f"postgresql://tokenrota:{PASSWORD}@127.0.0.1:{closed_port}/tokens"

    result = await cli(*command, environ=environment(tmp_path, url))

    assert_one_line(result, status=1, says="connection refused")
    assert f"postgresql://tokenrota:***@127.0.0.1:{closed_port}/tokens" in result.stderr
    assert "DATABASE_URL" in result.stderr


async def test_an_unknown_database_host_is_named(tmp_path: Path) -> None:
    url = f"postgresql://tokenrota:{PASSWORD}@db.invalid:5432/tokens"

    result = await cli("migrate", environ=environment(tmp_path, url))

    assert_one_line(result, status=1, says="unknown host db.invalid")


async def test_a_database_that_never_answers_times_out_in_one_line(
    tmp_path: Path, silent_port: int
) -> None:
    """The wait is DATABASE_CONNECT_TIMEOUT's (5 s by default): lowered here, not waited out."""
    url = f"postgresql://tokenrota:{PASSWORD}@127.0.0.1:{silent_port}/tokens"
    environ = {**environment(tmp_path, url), "DATABASE_CONNECT_TIMEOUT": "0.25"}

    result = await cli("serve", environ=environ)

    assert_one_line(
        result, status=1, says="no answer within 0.25 seconds (DATABASE_CONNECT_TIMEOUT)"
    )


# -- the database refuses ---------------------------------------------------------------------


async def test_a_missing_database_is_named_with_what_to_do(
    tmp_path: Path, postgres_url: str
) -> None:
    url = with_login(database_url_for(postgres_url, "no_such_database"), "postgres")

    result = await cli("serve", environ=environment(tmp_path, url))

    assert_one_line(result, status=1, says='database "no_such_database" does not exist')
    assert "create it" in result.stderr


async def test_an_unknown_role_is_named_with_what_to_do(tmp_path: Path, postgres_url: str) -> None:
    url = with_login(postgres_url, "no_such_role")

    result = await cli("create-user", "a@example.com", environ=environment(tmp_path, url))

    # 'role "no_such_role" does not exist' here; a server asking for passwords says
    # 'password authentication failed for user "no_such_role"' instead.
    assert_one_line(result, status=1, says='"no_such_role"')
    assert "check the user and password in DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    ("command", "fault", "says"),
    [
        (("serve",), "closed port", "is PostgreSQL running and listening there? check"),
        (("migrate",), "missing database", "create it, or fix the database name in"),
        (("list-clients",), "unknown role", "check the user and password in"),
    ],
    ids=["refused", "missing-database", "unknown-role"],
)
async def test_a_failing_direct_url_is_the_variable_named(
    tmp_path: Path,
    database_url: str,
    postgres_url: str,
    closed_port: int,
    command: tuple[str, ...],
    fault: str,
    says: str,
) -> None:
    """With DATABASE_DIRECT_URL set, the schema is checked there: its failure names it, not the
    DATABASE_URL that works."""
    direct = {
        "closed port": f"postgresql://tokenrota:{PASSWORD}@127.0.0.1:{closed_port}/tokens",
        "missing database": with_login(database_url_for(postgres_url, "no_such_db"), "postgres"),
        "unknown role": with_login(database_url, "no_such_role"),
    }[fault]
    environ = {**environment(tmp_path, database_url), "DATABASE_DIRECT_URL": direct}

    result = await cli(*command, environ=environ)

    assert_one_line(result, status=1, says=f"{says} DATABASE_DIRECT_URL")
    assert "DATABASE_URL" not in result.stderr.replace("DATABASE_DIRECT_URL", "")


# -- the schema does not match this version ---------------------------------------------------


@pytest.mark.parametrize("command", [("serve",), ("list-clients",)])
async def test_a_database_not_migrated_is_refused_with_the_command_to_run(
    tmp_path: Path, empty_database: str, command: tuple[str, ...]
) -> None:
    result = await cli(*command, environ=environment(tmp_path, empty_database))

    assert_one_line(result, status=1, says="run `tokenrota migrate` first")
    assert f"it is at no revision, this version needs {schema.head_revision()}" in result.stderr


async def test_after_migrate_the_same_database_is_accepted(
    tmp_path: Path, empty_database: str
) -> None:
    environ = environment(tmp_path, empty_database)

    migrated = await cli("migrate", environ=environ)
    listed = await cli("list-clients", environ=environ)
    again = await cli("migrate", environ=environ)

    assert migrated.returncode == 0, migrated.stderr
    assert "nothing to migrate" not in migrated.stderr
    assert (listed.returncode, listed.stdout) == (0, ""), listed.stderr
    assert (again.returncode, again.stdout) == (0, ""), again.stderr
    assert again.stderr == "the database is at this version's head: nothing to migrate\n"


async def test_a_database_from_a_newer_version_is_left_alone(
    tmp_path: Path, db: asyncpg.Connection, database_url: str
) -> None:
    await db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    environ = environment(tmp_path, database_url)

    for command in ("migrate", "serve"):
        result = await cli(command, environ=environ)

        assert_one_line(result, status=1, says="9999_from_the_future")
        assert "does not know" in result.stderr
    assert await db.fetchval("SELECT version_num FROM alembic_version") == "9999_from_the_future"


async def test_a_migration_the_database_refuses_ends_in_one_error_line(
    tmp_path: Path, empty_database: str, unprivileged_role: str
) -> None:
    """alembic's progress lines come first; the failure is the last line, and the only error."""
    url = with_login(empty_database, unprivileged_role)

    result = await cli("migrate", environ=environment(tmp_path, url))

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]
    assert "permission denied for schema public" in lines[-1]
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr


# -- the port ---------------------------------------------------------------------------------


async def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = await cli(
            "serve", "--port", str(port), environ=environment(tmp_path, database_url)
        )

    assert_one_line(result, status=1, says=f"cannot listen on 127.0.0.1:{port}")
    assert "address already in use" in result.stderr
    assert "--port or PORT" in result.stderr


async def test_serve_on_an_unknown_host_says_so_in_one_line(
    tmp_path: Path, database_url: str
) -> None:
    environ = {**environment(tmp_path, database_url), "HOST": "web.invalid"}

    result = await cli("serve", environ=environ)

    assert_one_line(result, status=1, says="cannot listen on web.invalid:8000: unknown host")


# -- the console script -----------------------------------------------------------------------


async def test_the_console_script_answers_the_same_one_line(
    tmp_path: Path, closed_port: int
) -> None:
    """The installed `tokenrota` script, not only `python -m tokenrota_server`."""
    url = f"postgresql://tokenrota:{PASSWORD}@127.0.0.1:{closed_port}/tokens"
    script = Path(sys.executable).parent / "tokenrota"

    result = await asyncio.to_thread(
        subprocess.run,
        [str(script), "purge"],
        cwd=PROJECT_ROOT,
        env={"PATH": "", **environment(tmp_path, url)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert_one_line(result, status=1, says="connection refused")


# -- the masked URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:pw@db:5432/tokens", "postgresql://app:***@db:5432/tokens"),
        ("postgresql://app@db/tokens", "postgresql://app@db/tokens"),
        ("postgresql://app:@/tokens?host=/run/pg", "postgresql://app:@/tokens?host=/run/pg"),
        (
            "postgres://app@db/tokens?sslmode=require&password=pw",
            "postgres://app@db/tokens?sslmode=require&password=***",
        ),
        ("postgresql://app:p%40ss@db/tokens", "postgresql://app:***@db/tokens"),
    ],
)
def test_a_shown_url_never_holds_its_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown
