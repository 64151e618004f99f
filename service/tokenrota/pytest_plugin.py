"""The pytest plugin: a real token service, on a real Postgres, for async integration tests.

Installing the package registers it (the `pytest11` entry point `tokenrota`), which gives every
test suite in that environment these fixtures:

    token_service   a running instance (uvicorn on a free local port) on a database of its own
    token_client    an `httpx.AsyncClient` whose base URL is that instance

They need the `testing` extra (`pip install "tokenrota[testing]"`: the server, pytest-asyncio);
without it, a test that asks for them fails with one line saying so, and no other test changes.
Loading the plugin imports pytest and the standard library only, plus pytest-asyncio when it is
installed (a pytest plugin that pytest has loaded in that run anyway); the server, asyncpg and
uvicorn are imported by the first test that uses a fixture.

The Postgres server is `TEST_DATABASE_URL` when set, else an embedded one under
`<rootdir>/.data/test`, started for the run and stopped when the run ends, however it ends. One
template database is migrated per run; each instance gets a database of its own holding only the
template's rows (a clone, emptied after each test and reused), so tests never see each other's
rows. Override the `token_service_settings` fixture to change settings:
it returns a dict of `Settings` fields (`{"access_token_ttl": 60}`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import pytest

if TYPE_CHECKING:
    import httpx

    from tokenrota.testing import DatabaseSupply, TokenService

INSTALL_HINT = 'pip install "tokenrota[testing]"'

Fixture = TypeVar("Fixture", bound=Callable[..., Any])


def _missing(module: str | None) -> NoReturn:
    pytest.fail(
        f"the token_service fixtures need the testing extra ({module} is not installed): "
        f"{INSTALL_HINT}",
        pytrace=False,
    )


def _support() -> ModuleType:
    """`tokenrota.testing` (the server and its drivers), imported on first use."""
    try:
        from tokenrota import testing
    except ModuleNotFoundError as error:
        missing = error.name
    else:
        return testing
    # Outside the except block: the failure is one line, not chained to the import error.
    _missing(missing)


def _async_fixture(function: Fixture) -> Fixture:
    """`pytest_asyncio.fixture`; without pytest-asyncio, a fixture that says what to install."""
    if importlib.util.find_spec("pytest_asyncio") is None:

        def unavailable() -> NoReturn:
            _missing("pytest_asyncio")

        return cast(Fixture, pytest.fixture(name=function.__name__)(unavailable))
    import pytest_asyncio

    return cast(Fixture, pytest_asyncio.fixture(function))


@pytest.fixture(scope="session")
def token_service_postgres_url(pytestconfig: pytest.Config) -> str:
    """The Postgres server the instances use: `TEST_DATABASE_URL`, else the embedded one."""
    testing = _support()
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    started: str = testing.start_test_postgres(Path(pytestconfig.rootpath) / ".data" / "test")
    return started


@pytest.fixture(scope="session")
def token_service_template(token_service_postgres_url: str) -> Iterator[str]:
    """A database migrated to head once per run, which each instance clones."""
    testing = _support()
    name: str = testing.create_template(token_service_postgres_url)
    yield name
    testing.drop_database(token_service_postgres_url, name)


@pytest.fixture
def token_service_settings() -> Mapping[str, Any]:
    """Overrides of `Settings` fields for `token_service`; override this fixture to set some."""
    return {}


@pytest.fixture(scope="session")
def token_service_databases(
    token_service_postgres_url: str, token_service_template: str
) -> Iterator[DatabaseSupply]:
    """Where each instance's database comes from: the template's rows only, no one else's."""
    supply: DatabaseSupply = _support().DatabaseSupply(
        token_service_postgres_url, token_service_template
    )
    yield supply
    supply.close()


@_async_fixture
async def token_service(
    token_service_databases: DatabaseSupply, token_service_settings: Mapping[str, Any]
) -> AsyncIterator[TokenService]:
    """A running token service on a fresh database of its own."""
    testing = _support()
    name = await token_service_databases.take()
    try:
        url = token_service_databases.url_of(name)
        settings = testing.instance_settings(url, **token_service_settings)
        async with testing.run_token_service(settings) as service:
            yield service
    finally:
        token_service_databases.discard(name)


@_async_fixture
async def token_client(token_service: TokenService) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose base URL is the running `token_service`."""
    async with _support().local_client(token_service.base_url) as client:
        yield client
