"""Keyset pagination's two parameters: `limit`, and the opaque `cursor`.

A cursor is the last row's sort key with a tag of the query it belongs to (a digest of its
filters, so an email prefix never travels in it), JSON in base64url. One from another query, or
altered, is `MalformedRequest` (400): it can never page through another query's rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from tokenrota_server.errors import InvalidInput, MalformedRequest

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 512


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


def _query_tag(query: str) -> str:
    # Binds a cursor to its query's filters without carrying them (an email prefix stays
    # out of the cursor); a mismatch is a cursor from elsewhere.
    return hashlib.sha256(query.encode()).hexdigest()[:16]
