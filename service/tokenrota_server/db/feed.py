"""The revocation feed's table (`revocations`, filled by triggers): its cursor and its pages.

Ids become visible in their own order (the triggers' advisory lock, `FEED_LOCK_KEY`; see
docs/architecture.md), so "rows after id N" misses nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from tokenrota_server.db.pagination import MAX_BIGINT
from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import MalformedRequest

# Rows per answer; a follower that gets a full page asks again at once.
PAGE_LIMIT = 1000
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
