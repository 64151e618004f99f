"""Keyset pagination's two parameters: `limit`, and the opaque `cursor`.

A cursor is the last row's sort key with a tag of the query it belongs to (a digest of its
filters, so an email prefix never travels in it), JSON in base64url. One from another query, or
altered, is `MalformedRequest` (400): it can never page through another query's rows. So is
one whose key is out of the column's range: forged, since we never issue one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tokenrota_server.errors import InvalidInput, MalformedRequest

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 512
# The largest bigint: a greater id cannot be a row's, and Postgres refuses it as a parameter.
MAX_BIGINT = 2**63 - 1


def page_size(raw: str | None) -> int:
    """The `limit` query parameter: 1 to `MAX_PAGE_SIZE`, default `DEFAULT_PAGE_SIZE`."""
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidInput(f"'limit' must be a whole number from 1 to {MAX_PAGE_SIZE}.")
    return int(raw)


def encode_cursor(query: str, key: list[Any]) -> str:
    """An opaque cursor for the page after `key` of the listing `query`."""
    raw = json.dumps([_query_tag(query), *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(query: str, cursor: str) -> list[Any]:
    """The key a cursor of the listing `query` carries; raise `MalformedRequest` if it is
    not one we issued for this same query."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        raise MalformedRequest("The cursor is not valid.") from None
    if not isinstance(decoded, list) or not decoded or decoded[0] != _query_tag(query):
        raise MalformedRequest("The cursor is not valid for this query.")
    return decoded[1:]


def decode_time_key(query: str, cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) key of a cursor of `query`; raise `MalformedRequest` unless the
    time has an offset and lies within datetime's range once in UTC."""
    key = decode_cursor(query, cursor)
    if len(key) != 2 or not all(isinstance(part, str) for part in key):
        raise MalformedRequest("The cursor is not valid.")
    try:
        at = datetime.fromisoformat(key[0])
        if at.tzinfo is None:
            raise ValueError("no offset")
        # 0001-01-01T00:00:00+14:00 is in no year datetime holds once in UTC.
        return at.astimezone(UTC), UUID(key[1])
    except (ValueError, OverflowError):
        raise MalformedRequest("The cursor is not valid.") from None


def decode_row_id(query: str, cursor: str) -> int:
    """The row id of a cursor of `query`; raise `MalformedRequest` unless it is a bigint id
    (1 to `MAX_BIGINT`)."""
    key = decode_cursor(query, cursor)
    if len(key) != 1 or type(key[0]) is not int or not 1 <= key[0] <= MAX_BIGINT:
        raise MalformedRequest("The cursor is not valid.")
    return key[0]


def _query_tag(query: str) -> str:
    # Binds a cursor to its query's filters without carrying them (an email prefix stays
    # out of the cursor); a mismatch is a cursor from elsewhere.
    return hashlib.sha256(query.encode()).hexdigest()[:16]
