"""The databases the test fixtures hand out: one test at a time each, emptied in between.

A database is cloned from the migrated template once and then reused: after a test it is
emptied (every row deleted, the template's own rows and sequence positions put back) in a
background thread while the next test runs, so a test never waits for a database. One whose
schema a test changed (a migration test, a dropped table), or that cannot be emptied, is
dropped and replaced by a fresh clone.

A new Postgres session, and its catalog caches, cost more server CPU than most tests' own
queries. So the emptying keeps one connection per database from reset to reset, and a supply
made with `keep_sessions` keeps the tests' sessions too (`connect`/`release`, and an app's
pool through `take_pool`/`give_back_pool`), for a suite whose tests share one event loop.
Needs asyncpg (the `testing` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import uuid
from collections.abc import Callable, Coroutine, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

T = TypeVar("T")

# Databases ready or on their way per supply: the one a test holds, the one emptied behind it,
# and one more for a test that takes two (an instance and a direct `database_url`).
POOL_SIZE = 3
# Seconds the other sessions still on a used database get to end once told to.
TERMINATE_TIMEOUT = 5.0
# Seconds a kept session may take to be made idle before it is closed instead.
SETTLE_TIMEOUT = 5.0
# At most one connection and one pool of at most this many sessions are kept per database:
# what one test usually opens, well inside the server's connection limit.
KEPT_POOL_SIZE = 2

# What a kept session is put back to between tests, as DISCARD ALL would but keeping the
# statements asyncpg prepared; the last call flushes its statistics now (they are otherwise
# flushed at most once a second) so that the schema check reads its catalog writes.
_SETTLE = (
    "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; SET SESSION AUTHORIZATION DEFAULT;"
    " RESET ALL; DISCARD SEQUENCES; SELECT pg_stat_force_next_flush()"
)

# Whether a test changed the schema, read from what Postgres counts anyway: every row written
# to a catalog of this database (a table, column, index, function, type, owner or grant made,
# altered or dropped; a large object), plus the settings and prepared transactions that live
# outside them. A clone starts at zero and the emptying writes no catalog row, so anything
# else is a test's doing. Counters, not a description of every object: a fifth of the server
# CPU. Statistics are flushed by a session as it ends, and every other session has ended when
# this is read. pg_statistic is left out: ANALYZE (autovacuum's too) writes it.
_SCHEMA_WRITES = """
SELECT current_setting('track_counts')::bool AS counted,
    (SELECT coalesce(sum(pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
                         + pg_stat_get_tuples_deleted(c.oid)), 0)
     FROM pg_class c
     WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r'
       AND NOT c.relisshared AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data'))
    + (SELECT count(*) FROM pg_db_role_setting
       WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()))
    + (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()) AS writes
"""
# The tables, children before the tables they reference: deleting in this order never trips
# a foreign key.
_TABLES = """
WITH RECURSIVE tables AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_%'
), depth (oid, depth) AS (
    SELECT oid, 0 FROM tables
    UNION ALL
    SELECT con.conrelid, depth.depth + 1 FROM depth
    JOIN pg_constraint con ON con.confrelid = depth.oid AND con.contype = 'f'
    WHERE con.conrelid <> con.confrelid AND depth.depth < 32
)
SELECT n.nspname AS schema, c.relname AS name FROM depth
JOIN pg_class c ON c.oid = depth.oid JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY n.nspname, c.relname ORDER BY max(depth.depth) DESC, 1, 2
"""
_SEQUENCES = """
SELECT format('%I.%I', schemaname, sequencename) AS name, last_value, start_value
FROM pg_sequences
"""


@dataclass(frozen=True)
class _Template:
    """What a used database is emptied back to: the template's rows and sequences."""

    # (schema, table), children first.
    tables: tuple[tuple[str, str], ...]
    rows: dict[tuple[str, str], tuple[tuple[str, ...], list[tuple[Any, ...]]]]
    sequences: tuple[tuple[str, int, bool], ...]
    # How CREATE DATABASE copies it: by its files where the server can (Postgres 15 and
    # later), a fifth of the server CPU of writing every block to the WAL, for a small template.
    strategy: str


class DatabaseSupply:
    """Databases at the schema's head, each used by one test at a time, emptied in between.

    `take` hands out a database that no running test uses and that holds what the template
    holds, nothing more; `discard` gives it back, to be emptied in a background thread. All
    the work on the server is done by that one thread, in order.
    """

    def __init__(
        self, server_url: str, template: str, *, size: int = POOL_SIZE, keep_sessions: bool = False
    ) -> None:
        self._server_url = server_url
        self._template_name = template
        self._ready: queue.SimpleQueue[str | BaseException] = queue.SimpleQueue()
        # Databases in `_ready` or on their way there; only `take` and `discard` change it,
        # from the tests' thread.
        self._coming = 0
        self._every: set[str] = set()
        self._every_lock = threading.Lock()
        # One thread: Postgres refuses two clones of one template at the same moment. It runs
        # one event loop, its own, so the connections kept for emptying live from test to test.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-service-db")
        self._loop: asyncio.AbstractEventLoop | None = None
        # Only the worker's thread touches these, as it empties a database.
        self._emptiers: dict[str, asyncpg.Connection] = {}
        self._template = self._worker.submit(self._read_template)
        for _ in range(size):
            self._submit(self._create)
        # Sessions tests released, kept for the next test on the same database.
        self._kept = _KeptSessions() if keep_sessions else None
        # Databases whose schema a test changed while sessions were kept on them: dropped once
        # the tests' loop has closed those sessions (a pool would otherwise try to reconnect to
        # the dropped database, and log its failures into whichever test runs then).
        self._condemned: queue.SimpleQueue[str] = queue.SimpleQueue()

    def url_of(self, name: str) -> str:
        return database_url_for(self._server_url, name)

    async def take(self) -> str:
        """The name of a database no one else is using, holding the template's rows only."""
        self._kept_here()
        if self._coming == 0:
            self._submit(self._create)
        self._coming -= 1
        try:
            ready = self._ready.get_nowait()
        except queue.Empty:
            ready = await asyncio.to_thread(self._ready.get)
        if isinstance(ready, BaseException):
            raise ready
        return ready

    def discard(self, name: str) -> None:
        """Give `name` back; it is emptied (or replaced) before anyone takes it again.

        Sessions released to the supply stay open through the emptying; any other session
        still on the database is ended.
        """
        spared = self._kept.spared(name) if self._kept is not None else frozenset()
        self._submit(lambda: self._reset(name, spared))

    async def connect(self, name: str) -> asyncpg.Connection:
        """A connection to database `name`: one a test released on it, else a new one."""
        kept = self._kept_here()
        connection = kept.take_connection(name) if kept is not None else None
        return connection or await asyncpg.connect(self.url_of(name))

    async def release(self, name: str, connection: asyncpg.Connection) -> None:
        """Done with `connection` (from `connect`): kept for the next test, or closed."""
        kept = self._kept_here()
        pids = await self._settled(name, [connection]) if kept is not None else None
        replaced: asyncpg.Connection | None = connection
        if kept is not None and pids is not None:
            replaced = kept.keep_connection(name, connection, pids)
        if replaced is not None:
            await _close(replaced)

    async def take_pool(self, url: str, options: Hashable) -> asyncpg.Pool | None:
        """A pool on `url` with `options` that an app gave back; None if there is none."""
        kept, name = self._kept_here(), self._name_of(url)
        return kept.take_pool(name, options) if kept is not None and name is not None else None

    async def give_back_pool(self, url: str, options: Hashable, pool: asyncpg.Pool) -> bool:
        """Keep `pool`, whose app has stopped, for the next app on `url` with `options`.

        False when it is not kept (not a database of this supply, a connection still lent, or
        a session that would not settle): the app then closes it.
        """
        kept, name = self._kept_here(), self._name_of(url)
        if kept is None or name is None or pool.is_closing():
            return False
        # Below its floor, the pool is opening a session in the background, one this could
        # not settle: the emptying would end it under the next test's requests.
        size = pool.get_size()
        if not pool.get_min_size() <= size == pool.get_idle_size() <= KEPT_POOL_SIZE or not size:
            return False
        async with contextlib.AsyncExitStack() as lent:
            connections = [await lent.enter_async_context(pool.acquire()) for _ in range(size)]
            pids = await self._settled(name, connections)
        if pids is None:
            return False
        replaced = kept.keep_pool(name, options, pool, pids)
        if replaced is not None:
            await _close_pool(replaced)
        return True

    async def close_kept(self) -> None:
        """Close the sessions kept on the running loop (before it closes)."""
        kept = self._kept_here()
        if kept is not None:
            await kept.close()

    def close(self) -> None:
        """Drop every database this supply made, once the work under way is done."""
        self._worker.submit(self._drop_all)
        self._worker.shutdown(wait=True)

    def _name_of(self, url: str) -> str | None:
        """The database of this supply's that `url` names exactly, if any."""
        name = urlsplit(url).path.lstrip("/")
        return name if self._made(name) and url == self.url_of(name) else None

    def _made(self, name: str) -> bool:
        """Whether database `name` is one of this supply's, not yet dropped."""
        with self._every_lock:
            return name in self._every

    def _kept_here(self) -> _KeptSessions | None:
        """The kept sessions, if they live on the running loop; those of condemned databases
        closed and the databases dropped."""
        if self._kept is None or not self._kept.on_running_loop():
            return None
        while True:
            try:
                name = self._condemned.get_nowait()
            except queue.Empty:
                return self._kept
            self._kept.abandon(name)
            self._worker.submit(self._drop, name)

    async def _settled(self, name: str, connections: Sequence[Any]) -> frozenset[int] | None:
        """Put `connections` (on database `name`) back to a new session's state, their
        statistics flushed; their server pids, or None if any cannot be kept."""
        if not self._made(name):
            return None
        for connection in connections:
            if (
                connection.is_closed()
                or connection.is_in_transaction()
                # pg_stat_force_next_flush is Postgres 15's.
                or connection.get_server_version().major < 15
            ):
                return None
            try:
                await connection.execute(_SETTLE, timeout=SETTLE_TIMEOUT)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                return None
        return frozenset(connection.get_server_pid() for connection in connections)

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the worker's event loop (from the worker's thread only)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(work)

    def _submit(self, make: Callable[[], str]) -> None:
        self._coming += 1
        self._worker.submit(self._deliver, make)

    def _deliver(self, make: Callable[[], str]) -> None:
        try:
            self._ready.put(make())
        except BaseException as error:
            self._ready.put(error)

    def _read_template(self) -> _Template:
        return self._run(_read_template(self.url_of(self._template_name)))

    def _create(self) -> str:
        name = f"token_service_{uuid.uuid4().hex[:16]}"
        strategy = self._template.result().strategy
        statement = f'CREATE DATABASE "{name}" TEMPLATE "{self._template_name}"{strategy}'
        self._run(execute(self._server_url, statement))
        with self._every_lock:
            self._every.add(name)
        return name

    def _reset(self, name: str, spared: frozenset[int]) -> str:
        try:
            emptied = self._run(self._empty(name, spared))
        except Exception:
            emptied = False
        if emptied:
            return name
        if spared:
            self._condemned.put(name)
        else:
            self._drop(name)
        return self._create()

    async def _empty(self, name: str, spared: frozenset[int]) -> bool:
        template = self._template.result()
        kept = self._emptiers.get(name)
        if kept is not None:
            try:
                return await _empty(kept, template, spared)
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                # Its test ended it (or the server did): a new session tries once more.
                del self._emptiers[name]
                await _close(kept)
        self._emptiers[name] = await asyncpg.connect(self.url_of(name))
        return await _empty(self._emptiers[name], template, spared)

    def _drop(self, name: str) -> None:
        kept = self._emptiers.pop(name, None)
        if kept is not None:
            self._run(_close(kept))
        self._run(execute(self._server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        with self._every_lock:
            self._every.discard(name)

    def _drop_all(self) -> None:
        with self._every_lock:
            names = sorted(self._every)
        for name in names:
            with contextlib.suppress(Exception):
                self._drop(name)
        if self._loop is not None:
            self._loop.close()


class _KeptSessions:
    """Idle Postgres sessions per database, all on one loop: a connection and an app's pool
    (at most one of each: what one test usually opens), with the server pids the emptying
    spares."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: dict[str, tuple[asyncpg.Connection, frozenset[int]]] = {}
        self._pools: dict[str, tuple[Hashable, asyncpg.Pool, frozenset[int]]] = {}

    def on_running_loop(self) -> bool:
        """Whether the running loop is the one the kept sessions live on.

        A suite whose tests each run a loop of their own keeps nothing from test to test: what
        a closed loop's test kept is abandoned.
        """
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return True
        if self._loop is not None and not self._loop.is_closed():
            return False
        for name in {*self._connections, *self._pools}:
            self.abandon(name)
        self._loop = loop
        return True

    def spared(self, name: str) -> frozenset[int]:
        connection = self._connections.get(name)
        pool = self._pools.get(name)
        return (connection[1] if connection else frozenset()) | (pool[2] if pool else frozenset())

    def take_connection(self, name: str) -> asyncpg.Connection | None:
        connection, _ = self._connections.pop(name, (None, None))
        return connection if connection is not None and not connection.is_closed() else None

    def keep_connection(
        self, name: str, connection: asyncpg.Connection, pids: frozenset[int]
    ) -> asyncpg.Connection | None:
        """Keep `connection`; the one it replaces, to be closed."""
        replaced, _ = self._connections.pop(name, (None, None))
        self._connections[name] = (connection, pids)
        return replaced

    def take_pool(self, name: str, options: Hashable) -> asyncpg.Pool | None:
        kept = self._pools.get(name)
        if kept is None or kept[0] != options:
            return None
        del self._pools[name]
        return kept[1] if not kept[1].is_closing() else None

    def keep_pool(
        self, name: str, options: Hashable, pool: asyncpg.Pool, pids: frozenset[int]
    ) -> asyncpg.Pool | None:
        """Keep `pool`; the one it replaces, to be closed."""
        _, replaced, _ = self._pools.pop(name, (None, None, None))
        self._pools[name] = (options, pool, pids)
        return replaced

    def abandon(self, name: str) -> None:
        """Drop the sessions kept on `name` without a word to the server (its loop may be gone,
        or the database about to be)."""
        connection, _ = self._connections.pop(name, (None, None))
        _, pool, _ = self._pools.pop(name, (None, None, None))
        with contextlib.suppress(Exception):
            if connection is not None:
                connection.terminate()
        with contextlib.suppress(Exception):
            if pool is not None:
                pool.terminate()

    async def close(self) -> None:
        connections, pools = self._connections, self._pools
        self._connections, self._pools = {}, {}
        for connection, _ in connections.values():
            await _close(connection)
        for _, pool, _ in pools.values():
            await _close_pool(pool)


async def _read_template(url: str) -> _Template:
    connection = await asyncpg.connect(url)
    try:
        tables = tuple(
            (record["schema"], record["name"]) for record in await connection.fetch(_TABLES)
        )
        rows: dict[tuple[str, str], tuple[tuple[str, ...], list[tuple[Any, ...]]]] = {}
        for table in tables:
            records = await connection.fetch(f"SELECT * FROM {_quoted(table)}")  # noqa: S608
            if records:
                rows[table] = (tuple(records[0].keys()), [tuple(record) for record in records])
        sequences = tuple(
            (
                record["name"],
                record["last_value"] or record["start_value"],
                record["last_value"] is not None,
            )
            for record in await connection.fetch(_SEQUENCES)
        )
        file_copy = connection.get_server_version().major >= 15
    finally:
        await connection.close()
    return _Template(tables, rows, sequences, " STRATEGY FILE_COPY" if file_copy else "")


async def _empty(
    connection: asyncpg.Connection, template: _Template, spared: frozenset[int] = frozenset()
) -> bool:
    """Bring `connection`'s database back to the template's rows; False if its schema changed.

    The sessions in `spared` were released idle, their statistics flushed (`_SETTLE`).
    """
    # A session a test left open could hold a lock, or write after the reset; and until it
    # has ended, its count of catalog writes may not be in yet.
    ended = await connection.fetchval(
        "SELECT coalesce(bool_and(pg_terminate_backend(pid, $1)), true) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND pid <> ALL($2::int[])",
        int(TERMINATE_TIMEOUT * 1000),
        list(spared),
    )
    catalog = await connection.fetchrow(_SCHEMA_WRITES)
    # Without counts (track_counts off) nothing tells a changed schema: always replaced.
    if not ended or catalog is None or not catalog["counted"] or catalog["writes"] != 0:
        return False
    async with connection.transaction():
        await _delete_rows(connection, template.tables)
        for (schema, table), (columns, records) in template.rows.items():
            await connection.copy_records_to_table(
                table, schema_name=schema, columns=columns, records=records
            )
        if template.sequences:
            names, values, called = zip(*template.sequences, strict=True)
            await connection.execute(
                "SELECT setval(name::regclass, value, called)"
                " FROM unnest($1::text[], $2::bigint[], $3::bool[]) AS s (name, value, called)",
                names,
                values,
                called,
            )
    return True


class _RowsKeepComing(Exception):
    """Triggers keep writing rows into the tables being emptied: the database is replaced."""


async def _delete_rows(connection: asyncpg.Connection, tables: Sequence[tuple[str, str]]) -> None:
    # DELETE rather than TRUNCATE: a few rows go in a fraction of a millisecond, where TRUNCATE
    # makes new files for every table and index. Only the tables holding rows, which one query
    # tells: a test writes to a few. A trigger may write a row into a table already emptied
    # (deleting a session records its revocation): the next look finds it.
    holding = "SELECT ARRAY[{}]".format(
        ", ".join(f"EXISTS (SELECT FROM {_quoted(table)})" for table in tables)
    )
    for _ in range(4):
        held = await connection.fetchval(holding)
        full = [table for table, rows in zip(tables, held, strict=True) if rows]
        if not full:
            return
        for table in full:
            await connection.execute(f"DELETE FROM {_quoted(table)}")  # noqa: S608
    raise _RowsKeepComing


async def _close(connection: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await connection.close(timeout=TERMINATE_TIMEOUT)


async def _close_pool(pool: asyncpg.Pool) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pool.close(), TERMINATE_TIMEOUT)


def _quoted(table: tuple[str, str]) -> str:
    """`schema.table` as SQL names, from the catalog (never from a test)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table)


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` on `server_url`, disconnecting whoever is still on it."""
    asyncio.run(execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def database_url_for(server_url: str, database: str) -> str:
    """`server_url` with its database name replaced."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


async def execute(url: str, *statements: str) -> None:
    """Run `statements` in order on a connection of their own (CREATE DATABASE wants one)."""
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()
