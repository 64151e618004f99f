"""Fixtures, on the package's own pytest plugin (`tokenrota.testing`): one Postgres server, one
migrated template, and for each test a database of its own holding only the template's rows.

The server (`token_service_postgres_url`: `TEST_DATABASE_URL` when set, else the embedded Postgres
under `.data/test/`), the template (`token_service_template`) and the supply of clones
(`token_service_databases`) are the plugin's session fixtures, so the tests here and the plugin's
`token_service` share them. The helpers that arrange users, clients and apps are fixtures too;
their plain functions live in `tests/support.py` and `tests/oauth_support.py`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota.testing import DatabaseSupply, database_url_for, execute, instance_settings
from tokenrota_server.config import Settings
from tokenrota_server.db import schema

from tests import oauth_support, pooler, support
from tests.outage import ControlledPostgres

# Re-exported: some test modules still import these from here rather than from tests.support.
from tests.support import (
    PASSWORD,
    PROJECT_ROOT,
    TEST_AUDIENCE,
    FakeClock,
    register_and_login,
    serve,
)

__all__ = ["PASSWORD", "PROJECT_ROOT", "FakeClock", "register_and_login", "serve"]

# Set by tests/e2e/test_pgbouncer.py for the contract suite it runs through PgBouncer.
POOLER_VARIABLE = "TEST_POOLER_URL"


def pytest_configure(config: pytest.Config) -> None:
    """Commands the tests start get SIGINT as a terminal gives it, however the run started.

    A run started in the background of a non-interactive shell (`make test &`) inherits SIGINT
    ignored, and every command a test starts would too: the tests that press Ctrl-C
    (tests/e2e/test_interrupted_start.py, test_wheel.py, tests/cli/test_running.py) would wait
    for an end that never comes. A handler, unlike an ignored signal, is not inherited.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long test files first: the end-to-end ones and those with a test marked slow, then
    the command line's (each test runs the CLI in a process of its own), then the rest.

    pytest-xdist hands work out in collection order (its groups first, biggest first), so a
    long file collected late ends the run on one worker while the other idles. Whole files
    move, in their order, so a module fixture is still made once per worker.
    """
    long_files = {
        item.path
        for item in items
        if item.path.parent.name == "e2e" or item.get_closest_marker("slow")
    }

    def rank(item: pytest.Item) -> int:
        if item.path in long_files:
            return 0
        return 1 if item.path.parent.name == "cli" else 2

    items.sort(key=rank)


@pytest.fixture(scope="session")
def postgres_url(token_service_postgres_url: str) -> str:
    """URL of the Postgres server's maintenance database: the plugin's server."""
    return token_service_postgres_url


@pytest.fixture(scope="session")
def token_service_databases(
    token_service_postgres_url: str, token_service_template: str
) -> Iterator[DatabaseSupply]:
    """The plugin's supply of databases, keeping the tests' Postgres sessions warm.

    The tests here share one event loop (pyproject.toml), so a session a test is done with
    (`db`, an app's pool) serves the next test on the same database: a new session costs the
    server more than most tests' own queries (docs/testing.md).
    """
    supply = DatabaseSupply(token_service_postgres_url, token_service_template, keep_sessions=True)
    support.keep_pools_in(supply)
    yield supply
    support.keep_pools_in(None)
    supply.close()


@pytest.fixture(scope="session")
async def kept_sessions(token_service_databases: DatabaseSupply) -> AsyncIterator[None]:
    """Closes the kept sessions on the tests' loop before it closes."""
    yield
    await token_service_databases.close_kept()


@pytest.fixture
async def database_name(
    token_service_databases: DatabaseSupply, kept_sessions: None
) -> AsyncIterator[str]:
    """A database of this test's own, at the schema's head, holding only the template's rows."""
    name = await token_service_databases.take()
    yield name
    token_service_databases.discard(name)


@pytest.fixture
def database_url(token_service_databases: DatabaseSupply, database_name: str) -> str:
    """The URL of the test's own database (`database_name`)."""
    return token_service_databases.url_of(database_name)


@pytest.fixture
async def db(
    token_service_databases: DatabaseSupply, database_name: str
) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, for arranging and checking rows."""
    connection = await token_service_databases.connect(database_name)
    yield connection
    await token_service_databases.release(database_name, connection)


@pytest.fixture(scope="session")
def outage_postgres() -> Iterator[ControlledPostgres]:
    """A second Postgres server that tests stop and start; stopped after the run."""
    server = ControlledPostgres()
    yield server
    server.stop()


@pytest.fixture
def outage_database(outage_postgres: ControlledPostgres) -> Iterator[str]:
    """A database at head on the second server; the server is running again afterwards."""
    name = f"outage_{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(outage_postgres.url, f'CREATE DATABASE "{name}"'))
    url = database_url_for(outage_postgres.url, name)
    schema.upgrade(url)
    yield url
    outage_postgres.start()
    asyncio.run(execute(outage_postgres.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def clock() -> FakeClock:
    """The clock the app under test reads."""
    return FakeClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The plugin's instance settings (fresh random secrets, cheap argon2) on the test's database.

    Many tests log in and register far more often than a person would; tests/db/test_throttle.py
    and tests/http/test_register.py set real limits where they test the throttles themselves.
    """
    settings = instance_settings(
        database_url,
        login_email_max_attempts=10_000,
        login_ip_max_attempts=10_000,
        register_ip_max_attempts=10_000,
        # A URI, as a resource server's audience must be (tokenrota.resource).
        token_audience=TEST_AUDIENCE,
    )
    return through_pooler_if_asked(settings)


def through_pooler_if_asked(settings: Settings) -> Settings:
    """`settings` with the app's pool behind the PgBouncer named by `TEST_POOLER_URL`, if set.

    tests/e2e/test_pgbouncer.py runs the contract suite so: the app reaches the test's database
    through the bouncer (DATABASE_POOLER=transaction), while the tests arrange and check rows
    on a direct connection (`db`), as they migrate.
    """
    pooler_url = os.environ.get(POOLER_VARIABLE)
    if not pooler_url or settings.database_url is None:
        return settings
    return replace(
        settings,
        database_url=pooler.through(pooler_url, settings.database_url),
        database_direct_url=settings.database_url,
        database_pooler="transaction",
    )


@pytest.fixture
async def client(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the service on the test's database."""
    async with serve(settings, clock) as client:
        yield client


@pytest.fixture
def make_settings(settings: Settings) -> Any:
    """Build variants of the test settings: `make_settings(refresh_reuse_interval=0)`."""
    return lambda **changes: replace(settings, **changes)


# -- helpers, as fixtures ----------------------------------------------------------------------
# Named apart from the plain functions above, which the re-export keeps importable from here.


@pytest.fixture(name="serve")
def serve_fixture() -> support.Serve:
    """`async with serve(settings, clock) as client`: the app for other settings, in process."""
    return support.serve


@pytest.fixture(name="register")
def register_fixture() -> support.Register:
    """`await register(client, email=None, password=PASSWORD)`: a new user's `user` object."""
    return support.register


@pytest.fixture(name="login")
def login_fixture() -> support.Login:
    """`await login(client, email, password=PASSWORD)`: the token pair of a new session."""
    return support.login


@pytest.fixture(name="register_and_login")
def register_and_login_fixture() -> support.RegisterAndLogin:
    """`await register_and_login(client)`: a new user and the token pair of a fresh session."""
    return support.register_and_login


@pytest.fixture(name="table_snapshot")
def table_snapshot_fixture() -> support.TableSnapshot:
    """`await table_snapshot(db)`: the rows bad input must leave alone, to compare."""
    return support.table_snapshot


@pytest.fixture(name="create_client")
def create_client_fixture() -> support.CreateClient:
    """`await create_client(db, settings, scope=..., name=...)`: a client's (id, secret)."""
    return oauth_support.create_client


# -- mail ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smtp_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A self-signed certificate (and key) for the test SMTP server: (cert file, key file)."""
    from tests.mail_support import write_certificate

    return write_certificate(tmp_path_factory.mktemp("smtp"))


@pytest.fixture
def smtp_server(smtp_certificate: tuple[Any, Any]) -> Iterator[Any]:
    """A real SMTP server on a free port (STARTTLS and AUTH required), stopped afterwards.

    Yields `SmtpServer`: its `inbox`, `port`, and `url` for SMTP_URL (with the credentials).
    """
    from tests.mail_support import SmtpServer

    server = SmtpServer(smtp_certificate)
    try:
        yield server.start()
    finally:
        server.stop()
