"""The fixtures' databases: reused from test to test, and nothing of one test left for the next."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from tokenrota.testing import DatabaseSupply, instance_settings, run_token_service

SupplyOf = Callable[..., DatabaseSupply]


@pytest.fixture
async def supply_of(
    token_service_postgres_url: str, token_service_template: str
) -> AsyncIterator[SupplyOf]:
    """`supply_of(size=1)`: a supply of the run's template, closed (its databases dropped) after."""
    made: list[DatabaseSupply] = []

    def supply_of(**options: Any) -> DatabaseSupply:
        made.append(DatabaseSupply(token_service_postgres_url, token_service_template, **options))
        return made[-1]

    yield supply_of
    for supply in made:
        await asyncio.to_thread(supply.close)


async def row_counts(url: str) -> dict[str, int]:
    """The number of rows in each table of the database at `url`."""
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        return {
            table: await connection.fetchval(f'SELECT count(*) FROM "{table}"')  # noqa: S608
            for (table,) in tables
        }
    finally:
        await connection.close()


async def databases_named(server_url: str, *names: str) -> list[str]:
    connection = await asyncpg.connect(server_url)
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", list(names)
        )
    finally:
        await connection.close()
    return sorted(row["datname"] for row in rows)


async def test_a_used_database_comes_back_holding_only_the_templates_rows(
    supply_of: SupplyOf,
) -> None:
    """Users, sessions, clients, mail, the revocation feed: all gone, sequences restarted."""
    supply = supply_of(size=1)
    first = await supply.take()
    url = supply.url_of(first)
    async with run_token_service(instance_settings(url)) as service:
        user = await service.create_user()
        await service.login(user.email)
        await service.create_client(["orders:read"])
    # Deleting the session writes its revocation into the feed: a row made by the emptying.
    fresh = await row_counts(url)

    supply.discard(first)
    again = await supply.take()
    counts = await row_counts(supply.url_of(again))
    connection = await asyncpg.connect(supply.url_of(again))
    try:
        next_feed_id = await connection.fetchval("SELECT nextval('revocations_id_seq')")
    finally:
        await connection.close()

    assert (fresh["users"], fresh["sessions"], fresh["clients"]) == (1, 1, 1)
    assert again == first
    assert counts == {table: int(table == "alembic_version") for table in counts}
    assert next_feed_id == 1


async def test_a_database_whose_schema_a_test_changed_is_replaced(supply_of: SupplyOf) -> None:
    """A migration test's leftovers (a dropped table, a new column) never reach the next test."""
    supply = supply_of(size=1)
    first = await supply.take()
    connection = await asyncpg.connect(supply.url_of(first))
    try:
        await connection.execute("ALTER TABLE users ADD COLUMN nickname text")
        await connection.execute("DROP TABLE audit_events")
    finally:
        await connection.close()

    supply.discard(first)
    again = await supply.take()
    counts = await row_counts(supply.url_of(again))
    left = await databases_named(supply.url_of("postgres"), first, again)

    assert again != first
    assert "audit_events" in counts
    assert left == [again]


# What a test can make or alter outside the tables' rows, none of which emptying undoes.
SCHEMA_CHANGES = pytest.mark.parametrize(
    "change",
    [
        "CREATE INDEX users_probe ON users (created_at)",
        "ALTER TABLE users ALTER COLUMN email SET DEFAULT 'someone@example.com'",
        "CREATE FUNCTION probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "GRANT SELECT ON users TO PUBLIC",
        "CREATE SCHEMA probe",
        "ALTER DATABASE {database} SET work_mem = '8MB'",
        "SELECT lo_create(0)",
    ],
    ids=["index", "default", "function", "grant", "schema", "database-setting", "large-object"],
)


@SCHEMA_CHANGES
async def test_a_database_changed_in_any_way_a_clone_does_not_undo_is_replaced(
    supply_of: SupplyOf, change: str
) -> None:
    """Each kind of object a test can make or alter outside the tables' rows: a fresh clone."""
    supply = supply_of(size=1)
    first = await supply.take()
    connection = await asyncpg.connect(supply.url_of(first))
    try:
        await connection.execute(change.format(database=f'"{first}"'))
    finally:
        await connection.close()

    supply.discard(first)
    again = await supply.take()

    assert again != first


async def test_a_session_left_open_on_a_used_database_is_ended(supply_of: SupplyOf) -> None:
    """A connection a test forgot, in a transaction holding a lock, neither blocks the emptying
    nor writes into the next test's database."""
    supply = supply_of(size=1)
    first = await supply.take()
    forgotten = await asyncpg.connect(supply.url_of(first))
    transaction = forgotten.transaction()
    await transaction.start()
    await forgotten.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")

    supply.discard(first)
    again = await supply.take()
    counts = await row_counts(supply.url_of(again))

    assert again == first
    assert counts["users"] == 0
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await forgotten.fetchval("SELECT 1")
    forgotten.terminate()


async def test_a_test_that_ends_every_other_session_still_gets_its_database_back(
    supply_of: SupplyOf,
) -> None:
    """The session kept for emptying, ended by a test (an outage test does so), is opened anew:
    the database is emptied and reused, not replaced."""
    supply = supply_of(size=1)
    first = await supply.take()
    supply.discard(first)
    second = await supply.take()
    connection = await asyncpg.connect(supply.url_of(second))
    try:
        ended = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await connection.execute(
            "INSERT INTO users (id, email, password_hash, created_at)"
            " VALUES (gen_random_uuid(), 'left@example.com', 'x', now())"
        )
    finally:
        await connection.close()

    supply.discard(second)
    again = await supply.take()
    counts = await row_counts(supply.url_of(again))

    assert ended == 1
    assert second == first
    assert again == first
    assert counts["users"] == 0


async def test_a_database_dropped_by_its_test_is_replaced(supply_of: SupplyOf) -> None:
    """Whatever a test did to its database, the next one gets a database at the schema's head."""
    supply = supply_of(size=1)
    first = await supply.take()
    connection = await asyncpg.connect(supply.url_of("postgres"))
    try:
        await connection.execute(f'DROP DATABASE "{first}" WITH (FORCE)')
    finally:
        await connection.close()

    supply.discard(first)
    again = await supply.take()
    counts = await row_counts(supply.url_of(again))

    assert again != first
    assert counts["alembic_version"] == 1


async def test_a_test_holding_more_databases_than_the_pool_gets_them_all(
    supply_of: SupplyOf,
) -> None:
    """Three at once from a pool of one: each a database of its own."""
    supply = supply_of(size=1)

    names = [await supply.take() for _ in range(3)]

    assert len(set(names)) == 3
    for name in names:
        supply.discard(name)


async def test_closing_the_supply_drops_every_database_it_made(
    supply_of: SupplyOf, token_service_postgres_url: str, token_service_template: str
) -> None:
    """Nothing is left on the server after the run, neither the ones taken nor the spares."""
    supply = DatabaseSupply(token_service_postgres_url, token_service_template, size=2)
    taken = await supply.take()
    supply.discard(taken)
    spare = await supply.take()
    supply.discard(spare)

    await asyncio.to_thread(supply.close)

    assert await databases_named(token_service_postgres_url, taken, spare) == []


async def test_the_embedded_test_server_keeps_no_durability_it_does_not_need(
    token_service_postgres_url: str,
) -> None:
    """A throwaway server: no fsync, no full-page images, no waiting for commits to reach WAL.
    (A TEST_DATABASE_URL server is someone's: left as it is, so not checked here.)"""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the server is TEST_DATABASE_URL's, not the embedded one")
    connection = await asyncpg.connect(token_service_postgres_url)
    try:
        settings = {
            name: await connection.fetchval("SELECT current_setting($1)", name)
            for name in ("fsync", "full_page_writes", "synchronous_commit")
        }
    finally:
        await connection.close()

    assert settings == {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


async def checkpoints_requested(server_url: str) -> int:
    connection = await asyncpg.connect(server_url)
    try:
        count: int = await connection.fetchval("SELECT num_requested FROM pg_stat_checkpointer")
    finally:
        await connection.close()
    return count


async def test_a_clone_is_copied_file_by_file(
    supply_of: SupplyOf, token_service_postgres_url: str
) -> None:
    """CREATE DATABASE's FILE_COPY strategy (its mark: the checkpoint it asks for) rather than
    writing every block of the template to the WAL, several times the server's CPU."""
    connection = await asyncpg.connect(token_service_postgres_url)
    try:
        if connection.get_server_version().major < 17:
            pytest.skip("pg_stat_checkpointer is Postgres 17's")
    finally:
        await connection.close()
    before = await checkpoints_requested(token_service_postgres_url)

    supply = supply_of(size=1)
    await supply.take()

    assert await checkpoints_requested(token_service_postgres_url) > before


# Sessions kept from test to test (`keep_sessions`, as this suite's own fixtures do).


async def test_a_released_connection_serves_the_next_test_as_a_new_session_would(
    supply_of: SupplyOf,
) -> None:
    """The same server session, with nothing of the last test left: no row, setting, advisory
    lock, LISTEN or sequence position of its own."""
    supply = supply_of(size=1, keep_sessions=True)
    first = await supply.take()
    connection = await supply.connect(first)
    pid = connection.get_server_pid()
    await connection.execute(
        "SET application_name = 'left over'; SET work_mem = '8MB'; LISTEN probe;"
        " SELECT pg_advisory_lock(42); SELECT nextval('revocations_id_seq');"
        " INSERT INTO users (id, email, password_hash, created_at)"
        " VALUES (gen_random_uuid(), 'left@example.com', 'x', now())"
    )
    await supply.release(first, connection)

    supply.discard(first)
    again = await supply.take()
    reused = await supply.connect(again)
    try:
        state = await reused.fetchrow(
            "SELECT pg_backend_pid() AS pid, current_setting('application_name') AS name,"
            " current_setting('work_mem') AS work_mem,"
            " (SELECT count(*) FROM pg_listening_channels()) AS channels,"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            "  AND pid = pg_backend_pid()) AS locks,"
            " (SELECT count(*) FROM users) AS users"
        )
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
            await reused.fetchval("SELECT currval('revocations_id_seq')")
    finally:
        await supply.release(again, reused)

    assert again == first
    assert reused is connection
    assert dict(state) == {
        "pid": pid,
        "name": "",
        "work_mem": "4MB",
        "channels": 0,
        "locks": 0,
        "users": 0,
    }


@SCHEMA_CHANGES
async def test_a_schema_changed_on_a_kept_session_still_replaces_the_database(
    supply_of: SupplyOf, token_service_postgres_url: str, change: str
) -> None:
    """The kept session's catalog writes are counted although it lives on; the database is
    replaced, and dropped once the session is let go."""
    supply = supply_of(size=1, keep_sessions=True)
    first = await supply.take()
    connection = await supply.connect(first)
    await connection.execute(change.format(database=f'"{first}"'))
    await supply.release(first, connection)

    supply.discard(first)
    again = await supply.take()
    # The supply's thread works in order: the drop is handed to it at a take once the schema
    # check has run, so the database is gone by the end of the reset handed over after that.
    for _ in range(2):
        supply.discard(again)
        again = await supply.take()

    assert again != first
    assert connection.is_closed()
    assert await databases_named(token_service_postgres_url, first) == []


async def test_a_connection_left_in_a_transaction_is_closed_not_kept(
    supply_of: SupplyOf,
) -> None:
    supply = supply_of(size=1, keep_sessions=True)
    first = await supply.take()
    connection = await supply.connect(first)
    await connection.execute("BEGIN")
    await supply.release(first, connection)

    supply.discard(first)
    again = await supply.take()
    fresh = await supply.connect(again)
    await supply.release(again, fresh)

    assert again == first
    assert connection.is_closed()
    assert fresh is not connection


async def test_a_pool_given_back_is_lent_to_the_next_app_with_the_same_options(
    supply_of: SupplyOf,
) -> None:
    """Its sessions outlive the emptying; another app's options, or another database, get
    none."""
    supply = supply_of(size=2, keep_sessions=True)
    first = await supply.take()
    url = supply.url_of(first)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    pid = await pool.fetchval(
        "INSERT INTO users (id, email, password_hash, created_at)"
        " VALUES (gen_random_uuid(), 'left@example.com', 'x', now()) RETURNING pg_backend_pid()"
    )
    other = await supply.take()
    lent = await pool.acquire()
    refused_while_lent = await supply.give_back_pool(url, "options", pool)
    await pool.release(lent)

    kept = await supply.give_back_pool(url, "options", pool)
    supply.discard(first)
    again = await supply.take()
    elsewhere = await supply.take_pool(supply.url_of(other), "options")
    unlike = await supply.take_pool(url, "other options")
    taken = await supply.take_pool(url, "options")
    try:
        assert taken is pool
        state = await pool.fetchrow("SELECT pg_backend_pid() AS pid, count(*) AS users FROM users")
    finally:
        await pool.close()

    assert (refused_while_lent, kept) == (False, True)
    assert again == first
    assert (elsewhere, unlike) == (None, None)
    assert dict(state) == {"pid": pid, "users": 0}


# What was kept on a closed loop cannot be closed properly: the garbage collector closes its
# socket, and says so. Collected in this test, so the warning is this test's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sessions_kept_on_a_loop_since_closed_are_not_lent(supply_of: SupplyOf) -> None:
    """A suite whose tests each run their own event loop gets new connections, every one
    working, and its databases emptied as before."""
    supply = supply_of(size=1, keep_sessions=True)

    async def a_test(previous: asyncpg.Connection | None) -> tuple[asyncpg.Connection, int]:
        name = await supply.take()
        connection = await supply.connect(name)
        users = await connection.fetchval("SELECT count(*) FROM users")
        await connection.execute(
            "INSERT INTO users (id, email, password_hash, created_at)"
            " VALUES (gen_random_uuid(), 'left@example.com', 'x', now())"
        )
        assert connection is not previous
        await supply.release(name, connection)
        supply.discard(name)
        return connection, users

    first, _ = asyncio.run(a_test(None))
    second, users = asyncio.run(a_test(first))
    asyncio.run(supply.close_kept())  # on a third loop: lets go of what the second kept
    del first, second
    gc.collect()

    assert users == 0
