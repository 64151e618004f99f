"""The revocation feed's long polls, and the one LISTEN connection per process that wakes them.

Rows come from triggers, so every path that revokes appears in the feed, including later ones;
why the cursor never skips a row is in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import asyncpg

from tokenrota_server.db.feed import Cursor, FeedPage, read_after, read_window
from tokenrota_server.db.pool import CONNECT_TIMEOUT, CONNECTION_ERRORS, connect

logger = logging.getLogger("tokenrota.revocations")

FEED_CHANNEL = "tokenrota_revocations"
# The client scope that admits a reader of the feed; an operator grants it.
FEED_SCOPE = "revocations:read"
MAX_WAIT_SECONDS = 30
# How long the listener waits before reconnecting after it lost its connection.
LISTEN_RETRY_SECONDS = 1.0

# What ends a LISTEN connection (or its opening) without ending the process.
LISTEN_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


class FeedSignal:
    """One LISTEN connection per process, turning NOTIFYs into a wake-up of waiting requests.

    It is opened by the first read of the feed, so a process that no follower asks holds none.

    `changed()` is the event of the current generation: it is set (and replaced) at the next
    notification, and also whenever the listener reconnects, since notifications may have
    been lost meanwhile. With `listen=False` nothing listens and waiters rely on polling.
    Once `stopping` is set (the server has begun to stop), every waiter is woken and `stopped`
    is true: waiting requests then answer with what they have instead of holding the stop.
    """

    def __init__(
        self,
        database_url: str,
        *,
        listen: bool = True,
        stopping: asyncio.Event,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self._database_url = database_url
        self._connect_timeout = connect_timeout
        self._listen = listen
        self._stopping = stopping
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_watch: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def stopped(self) -> bool:
        """Whether the server has begun to stop: no request should wait any more."""
        return self._stopping.is_set()

    def changed(self) -> asyncio.Event:
        """The event the next notification sets; take it before reading the feed."""
        if self._listen and self._task is None and not (self._closed or self.stopped):
            # Once it listens it wakes every waiter, this reader too, to read again: nothing
            # revoked before the LISTEN began is missed.
            self._task = asyncio.create_task(self._run(), name="revocation-feed-listener")
        return self._event

    def wake(self) -> None:
        """Wake every waiter now (a notification, or a reconnection)."""
        woken, self._event = self._event, asyncio.Event()
        woken.set()

    def start(self) -> None:
        if self._stop_watch is None:
            self._stop_watch = asyncio.create_task(
                self._wake_when_stopping(), name="revocation-feed-stop-watch"
            )

    async def close(self) -> None:
        self._closed = True
        for task in (self._task, self._stop_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._stop_watch = None

    async def _wake_when_stopping(self) -> None:
        await self._stopping.wait()
        self.wake()

    async def _run(self) -> None:
        while True:
            try:
                connection = await open_listen_connection(self._database_url, self._connect_timeout)
            except LISTEN_ERRORS as error:
                logger.warning("feed listener cannot connect (%s); polling", type(error).__name__)
                await asyncio.sleep(LISTEN_RETRY_SECONDS)
                continue
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _, lost=lost: lost.set())
            try:
                await connection.add_listener(FEED_CHANNEL, self._notified)
                self.wake()  # anything revoked while no one listened is read now
                await lost.wait()
            except LISTEN_ERRORS as error:
                logger.warning("feed listener lost its connection (%s)", type(error).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(connection.close(timeout=2))
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    def _notified(self, *_: object) -> None:
        self.wake()


async def open_listen_connection(database_url: str, connect_timeout: float) -> asyncpg.Connection:
    """The connection the LISTEN runs on: the one place to point at a direct (non-PgBouncer)
    URL, since LISTEN needs a session of its own."""
    return await connect(database_url, timeout=connect_timeout)


async def follow(
    pool: asyncpg.Pool,
    signal: FeedSignal,
    *,
    after: Cursor | None,
    wait: float,
    now: datetime,
    window_seconds: int,
    poll_interval: float,
) -> FeedPage:
    """The next feed page; with `wait`, held until something is revoked or `wait` passes.

    Without `after`, the first page holds the revocations of the last `window_seconds`. No
    database connection is held while waiting. Once the server begins to stop
    (`signal.stopped`), the page read is the answer, even empty: a wait would hold the stop
    (uvicorn waits for requests in flight), and the follower asks again, of another instance.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        changed = signal.changed()
        async with pool.acquire() as connection:
            if after is None:
                page = await read_window(connection, since=now - timedelta(seconds=window_seconds))
            else:
                page = await read_after(connection, after)
        remaining = deadline - loop.time()
        if not page.empty or remaining <= 0 or signal.stopped:
            return page
        after = page.cursor
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), min(remaining, poll_interval))
