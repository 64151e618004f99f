"""The revocation feed: what resource servers read to stop revoked tokens within seconds.

Rows come from triggers (migrations 0007 and 0008), not from the code that revokes: every path
that sets a session's `revoked_at`, deletes a live session, records a revoked client token or
disables (or deletes) a client appears here, including paths added later.

The cursor. Transactions do not commit in the order they draw ids from a sequence, so "rows
after id N" could skip a lower id committed after a higher one was read. Here each revoking
transaction first takes one advisory lock (`FEED_LOCK_KEY`, in the triggers), held until it
commits: the next one draws its ids only once this one is visible. Ids are thus visible in their
own order, and the cursor (the last id served) moves only forward, across instances and restarts,
being data in Postgres. The price: revoking transactions queue behind each other for the moment
between their revocation and their commit (every revoking path is a short transaction).

Waking. One LISTEN connection per process (`FeedSignal`) turns NOTIFYs into an `asyncio.Event`
that waiting requests watch; each waiting request also re-reads every `REVOCATION_POLL_INTERVAL`
seconds, so lost notifications (PgBouncer in transaction mode) cost at most that much latency.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from tokenrota_server.db.pagination import MAX_BIGINT
from tokenrota_server.db.pool import CONNECTION_ERRORS, Connection
from tokenrota_server.errors import MalformedRequest

logger = logging.getLogger("tokenrota.revocations")

FEED_CHANNEL = "tokenrota_revocations"
MAX_WAIT_SECONDS = 30
# Rows per answer; a follower that gets a full page asks again at once.
PAGE_LIMIT = 1000
# How long the listener waits before reconnecting after it lost its connection.
LISTEN_RETRY_SECONDS = 1.0

# What ends a LISTEN connection (or its opening) without ending the process.
LISTEN_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)

# The advisory lock the feed's triggers take (migrations 0007, 0008); nothing else may use it.
FEED_LOCK_KEY = 0x7265766F_66656564  # "revofeed"
_CURSOR_TEXT = re.compile(r"\Av1\.[0-9]{1,19}\Z")


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in the feed: after the row `row_id`."""

    row_id: int

    def encode(self) -> str:
        """The opaque text clients hand back as `after`."""
        return base64.urlsafe_b64encode(f"v1.{self.row_id}".encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor `encode` made; raise `MalformedRequest` for anything else."""
        try:
            decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (binascii.Error, ValueError):
            raise MalformedRequest("The 'after' cursor is not one this feed gave.") from None
        # Nineteen digits reach past a bigint, which Postgres would refuse as the parameter.
        if len(text) > 64 or not _CURSOR_TEXT.match(decoded) or int(decoded[3:]) > MAX_BIGINT:
            raise MalformedRequest("The 'after' cursor is not one this feed gave.")
        return cls(int(decoded[3:]))


@dataclass(frozen=True)
class FeedPage:
    """One answer of the feed: the revoked sessions, client tokens and clients, and where to
    go on."""

    cursor: Cursor
    sessions: list[tuple[UUID, datetime]] = field(default_factory=list)
    tokens: list[tuple[str, datetime]] = field(default_factory=list)
    clients: list[tuple[str, datetime]] = field(default_factory=list)
    full: bool = False

    @property
    def empty(self) -> bool:
        return not self.sessions and not self.tokens and not self.clients

    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor.encode(),
            "sessions": [
                {"sid": str(sid), "revoked_at": int(at.timestamp())} for sid, at in self.sessions
            ],
            "tokens": [{"jti": jti, "exp": int(exp.timestamp())} for jti, exp in self.tokens],
            "clients": [
                {"client_id": client_id, "revoked_at": int(at.timestamp())}
                for client_id, at in self.clients
            ],
        }


async def read_after(
    connection: Connection, cursor: Cursor, *, limit: int = PAGE_LIMIT
) -> FeedPage:
    """The revocations after `cursor`, oldest first; at most `limit`."""
    rows = await connection.fetch(
        "SELECT id, session_id, jti, client_id, revoked_at, expires_at FROM revocations"
        " WHERE id > $1 ORDER BY id LIMIT $2",
        cursor.row_id,
        limit,
    )
    return _page(rows, cursor, limit)


async def read_window(
    connection: Connection, *, since: datetime, limit: int = PAGE_LIMIT
) -> FeedPage:
    """The revocations recorded at or after `since` (the first call's window); at most `limit`.

    The cursor it returns is the highest id visible now, even when the window is empty, so the
    next read starts after everything this one could have seen.
    """
    # One statement, so one snapshot: the highest id and the window are read together.
    rows = await connection.fetch(
        "WITH top AS (SELECT coalesce(max(id), 0) AS top FROM revocations)"
        " SELECT top.top, r.* FROM top LEFT JOIN LATERAL (SELECT id, session_id, jti, client_id,"
        " revoked_at, expires_at FROM revocations WHERE revoked_at >= $1 ORDER BY id LIMIT $2)"
        " r ON true",
        since,
        limit,
    )
    found = [row for row in rows if row["id"] is not None]
    start = Cursor(0) if len(found) >= limit else Cursor(rows[0]["top"])
    return _page(found, start, limit)


def _page(rows: list[asyncpg.Record], start: Cursor, limit: int) -> FeedPage:
    page = FeedPage(
        cursor=max([start, *(Cursor(row["id"]) for row in rows)]), full=len(rows) >= limit
    )
    for row in rows:
        if row["session_id"] is not None:
            page.sessions.append((row["session_id"], row["revoked_at"]))
        elif row["client_id"] is not None:
            page.clients.append((row["client_id"], row["revoked_at"]))
        else:
            page.tokens.append((row["jti"], row["expires_at"]))
    return page


class FeedSignal:
    """One LISTEN connection per process, turning NOTIFYs into a wake-up of waiting requests.

    `changed()` is the event of the current generation: it is set (and replaced) at the next
    notification, and also whenever the listener reconnects, since notifications may have
    been lost meanwhile. With `listen=False` nothing listens and waiters rely on polling.
    Once `stopping` is set (the server has begun to stop), every waiter is woken and `stopped`
    is true: waiting requests then answer with what they have instead of holding the stop.
    """

    def __init__(self, database_url: str, *, listen: bool = True, stopping: asyncio.Event) -> None:
        self._database_url = database_url
        self._listen = listen
        self._stopping = stopping
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_watch: asyncio.Task[None] | None = None

    @property
    def stopped(self) -> bool:
        """Whether the server has begun to stop: no request should wait any more."""
        return self._stopping.is_set()

    def changed(self) -> asyncio.Event:
        """The event the next notification sets; take it before reading the feed."""
        return self._event

    def wake(self) -> None:
        """Wake every waiter now (a notification, or a reconnection)."""
        woken, self._event = self._event, asyncio.Event()
        woken.set()

    def start(self) -> None:
        if self._listen and self._task is None:
            self._task = asyncio.create_task(self._run(), name="revocation-feed-listener")
        if self._stop_watch is None:
            self._stop_watch = asyncio.create_task(
                self._wake_when_stopping(), name="revocation-feed-stop-watch"
            )

    async def close(self) -> None:
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
                connection = await open_listen_connection(self._database_url)
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


async def open_listen_connection(database_url: str) -> asyncpg.Connection:
    """The connection the LISTEN runs on: the one place to point at a direct (non-PgBouncer)
    URL, since LISTEN needs a session of its own."""
    return await asyncpg.connect(database_url)


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
