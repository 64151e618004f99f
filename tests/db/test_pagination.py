"""Every cursor string is either decoded to values Postgres takes, or refused as 400: a
property over the admin listings' cursors (`pagination`) and the revocation feed's."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenrota_server import admin, revocations
from tokenrota_server.db import pagination
from tokenrota_server.errors import MalformedRequest

USERS = "users:"
AUDIT = "audit:"
SOME_ID = "00000000-0000-0000-0000-000000000001"
# One database for all the examples: they only read. Hypothesis cannot see that it is shared.
PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def base64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)
offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
times = st.datetimes(timezones=offsets).map(lambda at: at.isoformat())
users_cursors = st.one_of(
    st.text(max_size=80),
    st.builds(lambda at, uid: pagination.encode_cursor(USERS, [at, str(uid)]), times, st.uuids()),
    st.lists(json_values, max_size=3).map(lambda key: pagination.encode_cursor(USERS, key)),
)
audit_cursors = st.one_of(
    st.text(max_size=80),
    st.integers().map(lambda row_id: pagination.encode_cursor(AUDIT, [row_id])),
    st.lists(json_values, max_size=2).map(lambda key: pagination.encode_cursor(AUDIT, key)),
)
feed_cursors = st.one_of(
    st.text(max_size=80),
    st.integers().map(lambda row_id: base64url(f"v1.{row_id}")),
    st.from_regex(r"\Av1\.[0-9]{1,25}\Z").map(base64url),
)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database, as the listings take."""
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


async def refused_or_served(read: Callable[[], Awaitable[object]]) -> None:
    """Refused as `MalformedRequest` (400), or served: nothing else may escape."""
    with contextlib.suppress(MalformedRequest):
        await read()


@pytest.mark.slow  # 300 examples: seconds
@PROPERTY
@given(cursor=users_cursors)
@example(cursor=pagination.encode_cursor(USERS, ["0001-01-01T00:00:00+14:00", SOME_ID]))
@example(cursor=pagination.encode_cursor(USERS, ["9999-12-31T23:59:59-14:00", SOME_ID]))
@example(cursor=pagination.encode_cursor(USERS, ["2026-01-01T00:00:00+00:00", 5]))
async def test_a_users_cursor_is_decoded_in_range_or_refused(
    pool: asyncpg.Pool, cursor: str
) -> None:
    """GET /admin/users: no cursor reaches Postgres with a time or id it cannot take."""
    await refused_or_served(lambda: admin.list_users(pool, email_prefix="", cursor=cursor, limit=2))


@pytest.mark.slow  # 300 examples: seconds
@PROPERTY
@given(cursor=audit_cursors)
@example(cursor=pagination.encode_cursor(AUDIT, [2**63]))
@example(cursor=pagination.encode_cursor(AUDIT, [-(2**63) - 1]))
@example(cursor=pagination.encode_cursor(AUDIT, [10**30]))
async def test_an_audit_cursor_is_decoded_in_range_or_refused(
    pool: asyncpg.Pool, cursor: str
) -> None:
    """GET /admin/audit: no cursor reaches Postgres with an id past a bigint."""
    await refused_or_served(lambda: admin.list_audit(pool, user_id=None, cursor=cursor, limit=2))


@pytest.mark.slow  # 300 examples: seconds
@PROPERTY
@given(cursor=feed_cursors)
@example(cursor=base64url("v1.9999999999999999999"))
@example(cursor=base64url(f"v1.{2**63}"))
async def test_a_feed_cursor_is_decoded_in_range_or_refused(
    db: asyncpg.Connection, cursor: str
) -> None:
    """GET /oauth/revocations: no `after` reaches Postgres with an id past a bigint."""

    async def read() -> None:
        await revocations.read_after(db, revocations.Cursor.parse(cursor), limit=2)

    await refused_or_served(read)


@pytest.mark.parametrize(
    ("key", "decoded"),
    [
        (["2026-01-01T12:00:00+14:00", SOME_ID], True),
        (["2026-01-01T12:00:00", SOME_ID], False),
        (["0001-01-01T00:00:00+14:00", SOME_ID], False),
        (["2026-01-01T12:00:00+00:00", 1], False),
    ],
)
def test_a_users_cursor_needs_an_offset_and_a_time_in_range(key: list[Any], decoded: bool) -> None:
    """The time needs an offset and must lie within year 1 to 9999 once in UTC; the id is a UUID."""
    cursor = pagination.encode_cursor(USERS, key)

    try:
        pagination.decode_time_key(USERS, cursor)
    except MalformedRequest:
        assert not decoded
    else:
        assert decoded


@pytest.mark.parametrize(
    ("row_id", "decoded"), [(1, True), (2**63 - 1, True), (0, False), (2**63, False), (True, False)]
)
def test_an_audit_cursor_holds_a_bigint_id(row_id: int, decoded: bool) -> None:
    """Ids from 1 to 2^63-1, the range of the column; anything else is forged."""
    cursor = pagination.encode_cursor(AUDIT, [row_id])

    try:
        pagination.decode_row_id(AUDIT, cursor)
    except MalformedRequest:
        assert not decoded
    else:
        assert decoded
