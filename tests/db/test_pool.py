"""The service's connection pool lends its connections first come, first served, drops them all
when one says the server went away, and finds the writable host of a multi-host URL even when
another host answers nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from tokenrota_server.db.pool import (
    FirstComeFirstServed,
    connect,
    create_pool,
    forget_server,
    hosts_of,
)


async def test_a_released_connection_goes_to_the_first_in_line(database_url: str) -> None:
    """A newcomer that asks while a connection is on its way back waits behind the one waiting.

    asyncpg's own queue leaves a released connection to whoever runs first: here the newcomer,
    scheduled before the waiter is woken, would take it, and the waiter would queue again.
    """
    pool = await create_pool(database_url, min_size=1, max_size=1)
    first = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    newcomer: asyncio.Future[Any] | None = None
    try:
        await asyncio.sleep(0.05)  # waiting in line
        releasing = asyncio.ensure_future(pool.release(first))
        await asyncio.sleep(0)  # the release has begun, and hands the connection back next
        newcomer = asyncio.ensure_future(pool.acquire())
        await releasing
        await asyncio.sleep(0.05)
        served_first, still_waiting = waiter.done(), not newcomer.done()
    finally:
        # Whoever holds the connection, nothing is left waiting on it.
        for task in (waiter, newcomer):
            if task is not None:
                task.cancel()
        pool.terminate()

    assert served_first
    assert still_waiting


async def test_acquirers_racing_for_two_connections_all_get_their_turn(database_url: str) -> None:
    """24 tasks sharing two connections, each querying 5 times: all served, nothing lost."""
    pool = await create_pool(database_url, min_size=2, max_size=2)
    served: list[int] = []

    async def worker(number: int) -> None:
        for _ in range(5):
            async with pool.acquire() as connection:
                served.append(await connection.fetchval("SELECT $1::int", number))

    try:
        await asyncio.gather(*(worker(number) for number in range(24)))
        idle, size = pool.get_idle_size(), pool.get_size()
    finally:
        await pool.close()

    assert sorted(served) == sorted(list(range(24)) * 5)
    assert (idle, size) == (2, 2)


async def test_an_acquirer_that_times_out_leaves_the_line(database_url: str) -> None:
    """A timed-out acquirer is not handed the connection later: the next one gets it."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        first = await pool.acquire()
        with pytest.raises(TimeoutError):
            await pool.acquire(timeout=0.05)
        await pool.release(first)
        async with pool.acquire(timeout=1) as connection:
            answer = await connection.fetchval("SELECT 1")
        idle = pool.get_idle_size()
    finally:
        await pool.close()

    assert answer == 1
    assert idle == 1


async def test_a_pool_whose_database_was_down_serves_in_order_too() -> None:
    """The empty pool of a start without a database (`open_pool`) gets the same queue."""
    from tokenrota_server.db.pool import open_pool

    pool = await open_pool("postgresql://nobody@127.0.0.1:1/none", min_size=1, max_size=2)
    try:
        queue: Any = getattr(pool, "_queue", None)
    finally:
        await pool.close()

    assert isinstance(queue, FirstComeFirstServed)


class Holder:
    """What the queue needs of asyncpg's connection holders: whether one is connected."""

    def __init__(self, connected: bool) -> None:
        self.connected = connected

    def is_connected(self) -> bool:
        return self.connected


def queue_of(*holders: Holder) -> FirstComeFirstServed:
    return FirstComeFirstServed(list(holders))  # type: ignore[arg-type]


async def test_a_connection_handed_to_a_cancelled_acquirer_passes_to_the_next() -> None:
    queue = queue_of()
    first, second = (asyncio.create_task(queue.get()) for _ in range(2))
    await asyncio.sleep(0)
    holder = Holder(connected=True)
    queue.put_nowait(holder)  # handed to the first in line ...
    first.cancel()  # ... which is cancelled (a timeout) before it could take it
    await asyncio.sleep(0)

    assert first.cancelled()
    assert await second is holder
    assert queue.waiting == 0


async def test_idle_connections_go_live_first_and_last_used_first() -> None:
    cold, older, newer = Holder(False), Holder(True), Holder(True)
    queue = queue_of(older, cold, newer)

    taken = [await queue.get() for _ in range(3)]

    assert taken == [newer, older, cold]
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_disconnected_nowait()


async def test_the_pool_minimum_upkeep_takes_only_disconnected_holders() -> None:
    live, cold = Holder(True), Holder(False)
    queue = queue_of(cold, live)

    assert queue.get_disconnected_nowait() is cold
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_disconnected_nowait()
    assert await queue.get() is live


async def backends_of(pool: asyncpg.Pool, count: int) -> set[int]:
    """The server pids behind `count` of the pool's connections, all held at once."""
    held = [await pool.acquire() for _ in range(count)]
    try:
        return {await connection.fetchval("SELECT pg_backend_pid()") for connection in held}
    finally:
        for connection in held:
            await pool.release(connection)


@pytest.mark.parametrize(
    "error",
    [asyncpg.ReadOnlySQLTransactionError("read-only"), ConnectionResetError()],
    ids=["demoted", "gone"],
)
async def test_a_server_gone_or_demoted_drops_every_connection(
    database_url: str, error: BaseException
) -> None:
    """After one connection's error says the server is gone or no longer writable, none of
    the pool's connections is lent again: each is reopened (on the writable host, with a
    multi-host URL) instead of failing a request of its own first."""
    pool = await create_pool(database_url, min_size=3, max_size=3)
    try:
        before = await backends_of(pool, 3)
        await forget_server(pool, error)
        after = await backends_of(pool, 3)
    finally:
        pool.terminate()

    assert len(before) == 3
    assert before.isdisjoint(after)


async def test_a_slow_answer_keeps_the_connections(database_url: str) -> None:
    """A timeout says nothing of the server: the pool keeps its connections (under load, a
    reconnect for each would only add to it)."""
    pool = await create_pool(database_url, min_size=3, max_size=3)
    try:
        before = await backends_of(pool, 3)
        await forget_server(pool, TimeoutError())
        after = await backends_of(pool, 3)
    finally:
        pool.terminate()

    assert before == after


@contextlib.asynccontextmanager
async def silent_host() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP port that accepts connections and never says a word (a machine gone from the
    network, as far as a client can tell before its timeout); yields it and a count of the
    connections it took."""
    taken = [0]
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken[0] += 1
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], taken
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def silent_first(database_url: str, silent_port: int) -> str:
    """A multi-host URL: the silent host first, then the test database's server."""
    probe = await asyncpg.connect(database_url)
    try:
        user, database, sockets, port = await probe.fetchrow(
            "SELECT current_user, current_database(), current_setting('unix_socket_directories'),"
            " current_setting('port')"
        )
    finally:
        await probe.close()
    server = f"{quote(sockets.split(',')[0], safe='')}:{port}"
    return (
        f"postgresql://{user}@127.0.0.1:{silent_port},{server}/{database}"
        "?target_session_attrs=read-write"
    )


def test_the_hosts_of_a_url_are_read_in_order() -> None:
    assert hosts_of("postgresql://u:p@db1:5432,db2,[::1]:6432/app?x=1") == [
        ("db1", 5432),
        ("db2", None),
        ("::1", 6432),
    ]
    assert hosts_of("postgresql://u@%2Frun%2Fpg:5433/app") == [("/run/pg", 5433)]


async def test_a_first_host_that_never_answers_does_not_hide_the_second(
    database_url: str,
) -> None:
    """The pool connects through the second host although the first takes the connection and
    never answers (asyncpg alone spends its one timeout there and gives up); the next
    connection goes to the host that answered, without waiting on the silent one again."""
    async with silent_host() as (port, taken):
        url = await silent_first(database_url, port)
        # Each host's deadline (DATABASE_CONNECT_TIMEOUT): 1 s rather than 5 to wait out on the
        # silent one, still ample for a local Postgres to answer on the second.
        pool = await create_pool(url, min_size=1, max_size=1, connect_timeout=1)
        try:
            answer = await pool.fetchval("SELECT 1")
            await forget_server(pool, ConnectionResetError())
            again = await pool.fetchval("SELECT 1")
            listener = await connect(url, timeout=5)
            await listener.close()
        finally:
            pool.terminate()

    assert answer == 1
    assert again == 1
    assert taken == [1]
