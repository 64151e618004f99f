"""The service behind PgBouncer in transaction pooling mode (Debian's pgbouncer, started here).

What breaks there, shown first: asyncpg's prepared-statement cache (a statement prepared on one
server connection is unknown on the next). DATABASE_POOLER=transaction turns it off; migrations
go to DATABASE_DIRECT_URL. Then the whole contract suite runs with the app's pool on the
bouncer, in a nested pytest that reads TEST_POOLER_URL (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from tokenrota.testing import database_url_for, execute, instance_settings
from tokenrota_server.db import schema
from tokenrota_server.db.pool import statement_cache_size

from tests.conftest import POOLER_VARIABLE
from tests.pooler import running_pgbouncer, through
from tests.processes import clean_environment
from tests.support import PROJECT_ROOT, FakeClock, login, register, serve

# The contract files whose SQL differs (every table family, every transaction shape: rotation,
# reuse and its committed revocation, the throttle's counters, sessions, accounts, OAuth
# clients and revocations, the purge's advisory lock): run in `make test` (207 tests). Ordered
# so that every other file makes two halves of about the same time (the purge's tests run the
# CLI and take seconds each): each half is a nested run of its own, on its own xdist worker.
CONTRACT_CORE = (
    "tests/http/test_login.py",
    "tests/db/test_purge.py",
    "tests/http/test_refresh_attacks.py",
    "tests/http/test_refresh.py",
    "tests/db/test_sessions.py",
    "tests/http/test_accounts.py",
    "tests/http/test_oauth.py",
    "tests/db/test_throttle.py",
)
HALVES = 2
# With TEST_POOLER_SUITE=full, every contract file.
CONTRACT_SUITE = (
    *CONTRACT_CORE,
    "tests/http/test_cookies.py",
    "tests/http/test_authorization_server.py",
    "tests/http/test_register.py",
    "tests/http/test_access_tokens.py",
    "tests/lib/test_verify.py",
    "tests/http/test_errors.py",
    "tests/http/test_bodies.py",
    "tests/http/test_browser_endpoints.py",
    # Accounts, administration and the revocation feed (issues 9, 10, 11).
    "tests/http/test_recovery.py",
    "tests/http/test_roles.py",
    "tests/http/test_admin.py",
    "tests/http/test_audit.py",
    "tests/http/test_revocations.py",
    "tests/db/test_throttle_overlimit.py",
    "tests/http/test_session_policy.py",
)
# A deadline against a hung run, not a speed check.
SUITE_WITHIN = 1800
CONCURRENT_REFRESHES = 40


@pytest.fixture(scope="module")
def pgbouncer_url(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PgBouncer (transaction pooling) in front of the test Postgres; stopped after the module.
    Under xdist each worker that runs a test here starts its own (in milliseconds), so the
    tests here spread over the workers."""
    with running_pgbouncer(postgres_url, tmp_path_factory.mktemp("pgbouncer")) as url:
        yield url


async def test_a_cached_prepared_statement_breaks_behind_transaction_pooling(
    pgbouncer_url: str, database_url: str
) -> None:
    """asyncpg's default statement cache fails once a query lands on another server connection;
    the cache size DATABASE_POOLER=transaction picks does not."""
    url = through(pgbouncer_url, database_url)
    for pooler, fails in (("none", True), ("transaction", False)):
        cached = await asyncpg.connect(url, statement_cache_size=statement_cache_size(pooler))
        other = await asyncpg.connect(url, statement_cache_size=0)
        try:
            assert await cached.fetchval("SELECT $1::int + 1", 1) == 2
            # The other client holds the server connection `cached` prepared its statement on
            # (pgbouncer lends the most recently freed one), so `cached` gets another.
            async with other.transaction():
                await other.execute("SELECT 1")
                if fails:
                    with pytest.raises(asyncpg.InvalidSQLStatementNameError):
                        await cached.fetchval("SELECT $1::int + 1", 2)
                else:
                    assert await cached.fetchval("SELECT $1::int + 1", 2) == 3
        finally:
            await cached.close()
            await other.close()


async def test_refreshes_race_through_pgbouncer(pgbouncer_url: str, database_url: str) -> None:
    """Many refreshes at once, on more pool connections than pgbouncer has server connections:
    every distinct token rotates once, and one token sent many times has one child."""
    settings = instance_settings(
        through(pgbouncer_url, database_url),
        database_pooler="transaction",
        database_direct_url=database_url,
        db_pool_max_size=20,
        login_ip_max_attempts=10_000,
        register_ip_max_attempts=10_000,
    )
    async with serve(settings, FakeClock()) as client:
        users = [await register(client) for _ in range(4)]
        pairs = [await login(client, user["email"]) for user in users]
        same = pairs[0]["refresh_token"]
        answers = await asyncio.gather(
            *(
                client.post("/refresh", json={"refresh_token": same})
                for _ in range(CONCURRENT_REFRESHES)
            ),
            *(
                client.post("/refresh", json={"refresh_token": p["refresh_token"]})
                for p in pairs[1:]
            ),
        )
        for pair in pairs:
            profile = await client.get(
                "/profile", headers={"Authorization": f"Bearer {pair['access_token']}"}
            )
            assert profile.status_code == 200, profile.text

    assert {answer.status_code for answer in answers} == {200}
    # The grace window: every copy of the same token got the same one child.
    assert len({answer.json()["refresh_token"] for answer in answers[:CONCURRENT_REFRESHES]}) == 1
    connection = await asyncpg.connect(database_url)
    try:
        twins = await connection.fetchval(
            "SELECT count(*) FROM (SELECT parent_id FROM refresh_tokens WHERE parent_id IS NOT"
            " NULL GROUP BY parent_id HAVING count(*) > 1) AS twins"
        )
    finally:
        await connection.close()
    assert twins == 0


def test_migrate_goes_to_the_direct_url(
    pgbouncer_url: str, postgres_url: str, tmp_path: Path
) -> None:
    """`tokenrota migrate` with DATABASE_URL on the bouncer migrates DATABASE_DIRECT_URL."""
    name = f"pooled_{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(postgres_url, f'CREATE DATABASE "{name}"'))
    direct = database_url_for(postgres_url, name)
    try:
        environment = clean_environment(
            ENV="test",
            DATABASE_URL=through(pgbouncer_url, direct),
            DATABASE_DIRECT_URL=direct,
            DATABASE_POOLER="transaction",
            ACCESS_TOKEN_SECRET=secrets.token_urlsafe(48),
            REFRESH_TOKEN_SECRET=secrets.token_urlsafe(48),
            MFA_ENCRYPTION_KEY=secrets.token_urlsafe(48),
            DATA_DIR=str(tmp_path),
        )
        command = [sys.executable, "-m", "tokenrota_server", "migrate"]
        done = subprocess.run(  # noqa: S603 - our own CLI
            command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        revision = asyncio.run(_revision(direct))
        assert revision == schema.head_revision()
    finally:
        asyncio.run(execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _revision(url: str) -> str | None:
    connection = await asyncpg.connect(url)
    try:
        return await schema.current_revision(connection)
    finally:
        await connection.close()


@pytest.mark.parametrize("half", range(HALVES), ids=lambda half: f"half-{half + 1}")
def test_the_contract_suite_passes_through_pgbouncer(
    pgbouncer_url: str, postgres_url: str, half: int
) -> None:
    """The contract test files, their app's pool on PgBouncer: all pass (every other file in
    each half: together, every file)."""
    environment = clean_environment(
        TEST_DATABASE_URL=postgres_url, **{POOLER_VARIABLE: pgbouncer_url}
    )
    files = CONTRACT_SUITE if os.environ.get("TEST_POOLER_SUITE") == "full" else CONTRACT_CORE
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files[half::HALVES]]
    done = subprocess.run(  # noqa: S603 - our own test suite
        command,
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUITE_WITHIN,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(f"\ncontract suite through pgbouncer: {summary}")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary
    assert "failed" not in summary
    assert "skipped" not in summary
