"""GET /oauth/revocations: every revoking path lands in the feed (through the triggers), the
cursor never skips a late commit, long polls wake on NOTIFY and, without it, by polling."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import threading
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server import revocations
from tokenrota_server.config import Settings
from tokenrota_server.db import oauth_clients, purge
from tokenrota_server.db.feed import Cursor, FeedPage, read_after

from tests.admin_support import admin_client
from tests.conftest import FakeClock, register_and_login, serve
from tests.http.test_http_limits import MARGIN_SECONDS, get, uvicorn_serving
from tests.mail_support import queued_token
from tests.oauth_support import FEED_SCOPE, basic, claims_of, client_token, create_client


async def feed(
    client: httpx.AsyncClient, credentials: tuple[str, str], **params: Any
) -> dict[str, Any]:
    """One answer of the feed (asserting 200)."""
    response = await client.get(
        "/oauth/revocations", params=params, headers=basic(*credentials), timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def sids(body: dict[str, Any]) -> set[str]:
    return {entry["sid"] for entry in body["sessions"]}


async def waiting_on_a_lock(db: asyncpg.Connection, pid: int) -> None:
    """Return once the backend `pid` waits on a lock (a deadline of 15 s against hanging)."""
    deadline = asyncio.get_running_loop().time() + 15
    query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
    while not await db.fetchval(query, pid):
        assert asyncio.get_running_loop().time() < deadline, "it never waited on the lock"
        await asyncio.sleep(0.01)


async def listening(db: asyncpg.Connection) -> None:
    """Return once the app's LISTEN connection to this database is up (a deadline of 15 s)."""
    deadline = asyncio.get_running_loop().time() + 15
    while not await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    ):
        assert asyncio.get_running_loop().time() < deadline, "it never listened"
        await asyncio.sleep(0.01)


@pytest.fixture
def found_nothing(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a long poll has read a page after its cursor and found it empty: from then on,
    only a NOTIFY (or its next poll) can tell it of a revocation. Waiting on this rather than
    for a while after sending the request."""
    read = asyncio.Event()
    read_page = revocations.read_after

    async def reading(connection: asyncpg.Connection, after: Cursor) -> FeedPage:
        page = await read_page(connection, after)
        if page.empty:
            read.set()
        return page

    monkeypatch.setattr(revocations, "read_after", reading)
    return read


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def test_the_first_call_returns_recent_revocations_and_a_cursor_that_moves_on(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """Without `after`: the revocations of the last token lifetime; after the cursor: only
    newer ones."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    user, first = await register_and_login(client)
    second = (
        await client.post(
            "/login", json={"email": user["email"], "password": "correct horse battery"}
        )
    ).json()
    await client.post("/logout", json={"refresh_token": first["refresh_token"]})

    initial = await feed(client, credentials)
    await client.post("/logout", json={"refresh_token": second["refresh_token"]})
    following = await feed(client, credentials, after=initial["cursor"])
    nothing_new = await feed(client, credentials, after=following["cursor"])

    # Both logins happen at the same fake instant: the first session is the one its token names.
    first_sid = claims_of(first["access_token"])["sid"]
    assert sids(initial) == {first_sid}
    assert len(following["sessions"]) == 1
    assert sids(following) != {first_sid}
    assert nothing_new["sessions"] == []
    assert nothing_new["tokens"] == []
    assert all(isinstance(entry["revoked_at"], int) for entry in initial["sessions"])


async def test_the_first_call_leaves_out_what_no_token_can_still_meet(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """A revocation older than ACCESS_TOKEN_TTL + JWT_LEEWAY is not in the initial window."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    _, pair = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})

    clock.advance(settings.access_token_ttl + settings.jwt_leeway - 1)
    inside = await feed(client, credentials)
    clock.advance(2)
    outside = await feed(client, credentials)

    assert len(inside["sessions"]) == 1
    assert outside["sessions"] == []


async def test_every_revoking_path_reaches_the_feed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """logout, logout/all, DELETE /sessions/{id}, password change, disable, reuse detection,
    /oauth/revoke (a user's token and a client's), and erasing a user: each session (or jti)
    revoked appears in the feed, without the paths knowing of it."""
    credentials = await create_client(db, settings, scope=f"read {FEED_SCOPE}")
    expected: set[str] = set()

    async def fresh_session() -> tuple[dict[str, Any], dict[str, Any], str]:
        user, pair = await register_and_login(client)
        sid = str(
            await db.fetchval("SELECT id FROM sessions WHERE user_id = $1", uuid.UUID(user["id"]))
        )
        expected.add(sid)
        return user, pair, sid

    _, pair, _ = await fresh_session()
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    _, pair, _ = await fresh_session()
    assert (await client.post("/logout/all", headers=bearer(pair))).status_code == 204
    _, pair, sid = await fresh_session()
    assert (await client.delete(f"/sessions/{sid}", headers=bearer(pair))).status_code == 204
    user, pair, _ = await fresh_session()
    other = (
        await client.post(
            "/login", json={"email": user["email"], "password": "correct horse battery"}
        )
    ).json()
    changed = await client.post(
        "/password",
        json={"current_password": "correct horse battery", "new_password": "another horse battery"},
        headers=bearer(other),
    )
    assert changed.status_code == 204
    user, pair, _ = await fresh_session()
    await db.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = 'user_disabled' WHERE user_id = $1",
        uuid.UUID(user["id"]),
        clock(),
    )
    _, pair, _ = await fresh_session()
    spent = pair["refresh_token"]
    assert (await client.post("/refresh", json={"refresh_token": spent})).status_code == 200
    clock.advance(settings.refresh_reuse_interval + 1)
    assert (await client.post("/refresh", json={"refresh_token": spent})).status_code == 403
    _, pair, _ = await fresh_session()
    revoked = await client.post(
        "/oauth/revoke", data={"token": pair["access_token"]}, headers=basic(*credentials)
    )
    assert revoked.status_code == 200
    user, pair, _ = await fresh_session()
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user["id"]))
    access = (await client_token(client, *credentials)).json()["access_token"]
    assert (
        await client.post("/oauth/revoke", data={"token": access}, headers=basic(*credentials))
    ).status_code == 200

    body = await feed(client, credentials)

    password_changed = await db.fetch(
        "SELECT id FROM sessions WHERE revoke_reason = 'password_change'"
    )
    assert len(password_changed) == 1
    expected.add(str(password_changed[0]["id"]))
    assert expected <= sids(body)
    assert len(expected) == 8
    assert [entry["jti"] for entry in body["tokens"]] == [claims_jti(access)]


async def test_a_disabled_or_deleted_client_reaches_the_feed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """Disabling a client adds it once (disabling it again adds nothing); deleting a live
    client's row adds it too; deleting a disabled one adds nothing more."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    disabled = await create_client(db, settings, scope="read", name="disabled")
    deleted = await create_client(db, settings, scope="read", name="deleted")
    start = await feed(client, credentials)

    assert await oauth_clients.disable_client(db, disabled[0], clock())
    assert not await oauth_clients.disable_client(db, disabled[0], clock())
    await db.execute("DELETE FROM clients WHERE client_id = $1", deleted[0])
    await db.execute("DELETE FROM clients WHERE client_id = $1", disabled[0])
    body = await feed(client, credentials, after=start["cursor"])

    assert [entry["client_id"] for entry in body["clients"]] == [disabled[0], deleted[0]]
    assert body["clients"][0]["revoked_at"] == int(clock().timestamp())
    assert body["sessions"] == []
    assert body["tokens"] == []


async def test_resets_and_the_admin_apis_revocations_reach_the_feed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The paths added beside the feed (a password reset, and the admin API's disable,
    revoke-sessions and erase) reach it through the same triggers, without knowing of it."""
    credentials = await create_client(db, settings, scope=f"read {FEED_SCOPE}")
    _, admin = await admin_client(client, db, settings)
    expected: set[str] = set()

    async def fresh_session() -> str:
        user, _ = await register_and_login(client)
        sid = await db.fetchval("SELECT id FROM sessions WHERE user_id = $1", uuid.UUID(user["id"]))
        expected.add(str(sid))
        return str(user["id"])

    user_id = await fresh_session()
    email = await db.fetchval("SELECT email FROM users WHERE id = $1", uuid.UUID(user_id))
    assert (await client.post("/password/forgot", json={"email": email})).status_code == 202
    token = await queued_token(db, settings, email)
    reset = await client.post(
        "/password/reset", json={"token": token, "new_password": "a brand new passphrase"}
    )
    assert reset.status_code == 204
    for path in ("/disable", "/sessions", ""):
        user_id = await fresh_session()
        method = client.post if path == "/disable" else client.delete
        answer = await method(f"/admin/users/{user_id}{path}", headers=admin)
        assert answer.status_code == 204, (path, answer.text)

    body = await feed(client, credentials)

    assert len(expected) == 4
    assert expected <= sids(body)


def claims_jti(token: str) -> str:
    jti: str = claims_of(token)["jti"]
    return jti


async def test_a_transaction_that_started_first_and_commits_last_is_not_skipped(
    database_url: str, db: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    """The first transaction (lower xid) revokes and holds; a second revokes meanwhile and has
    to wait for the first's commit before its row exists. A read in between sees neither; after
    both commit, a read sees both in commit order, and nothing again."""
    await register_and_login(client)
    await register_and_login(client)
    ids = [row["id"] for row in await db.fetch("SELECT id FROM sessions ORDER BY id")]
    start = await read_after(db, Cursor(0))
    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    revoke = "UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = $1"
    try:
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        await second_tx.start()
        first_xid = await first.fetchval("SELECT pg_current_xact_id()::text::bigint")
        second_xid = await second.fetchval("SELECT pg_current_xact_id()::text::bigint")
        await first.execute(revoke, ids[0])
        second_revokes = asyncio.create_task(second.execute(revoke, ids[1]))
        await waiting_on_a_lock(db, second.get_server_pid())
        between = await read_after(db, start.cursor)
        second_waited = not second_revokes.done()
        await first_tx.commit()
        await second_revokes
        await second_tx.commit()
        after = await read_after(db, between.cursor)
        again = await read_after(db, after.cursor)
    finally:
        await first.close()
        await second.close()

    assert first_xid < second_xid
    assert second_waited
    assert between.sessions == []
    assert [sid for sid, _ in after.sessions] == ids
    assert again.sessions == []
    assert between.cursor <= after.cursor <= again.cursor


async def test_ids_become_visible_in_their_own_order_under_a_real_race(
    database_url: str, db: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    """Forty connections revoke at once while a reader follows the cursor: every revocation is
    read exactly once, and no read ever sees an id above one it has not seen."""
    user, _ = await register_and_login(client)
    await db.execute(
        "INSERT INTO sessions (user_id, expires_at) SELECT $1, now() + interval '1 day'"
        " FROM generate_series(1, 39)",
        uuid.UUID(user["id"]),
    )
    ids = [row["id"] for row in await db.fetch("SELECT id FROM sessions")]
    connections = [await asyncpg.connect(database_url) for _ in ids]
    seen: list[int] = []
    done = asyncio.Event()

    async def revoke(connection: asyncpg.Connection, sid: uuid.UUID) -> None:
        async with connection.transaction():
            await connection.execute(
                "UPDATE sessions SET revoked_at = now(), revoke_reason = 'admin' WHERE id = $1",
                sid,
            )
            await asyncio.sleep(0.01)

    async def follow() -> None:
        cursor = Cursor(0)
        while True:
            finished = done.is_set()
            rows = await db.fetch(
                "SELECT id FROM revocations WHERE id > $1 ORDER BY id", cursor.row_id
            )
            seen.extend(row["id"] for row in rows)
            if rows:
                cursor = Cursor(rows[-1]["id"])
            if finished:
                return
            await asyncio.sleep(0)

    try:
        reader = asyncio.create_task(follow())
        await asyncio.gather(*(revoke(c, sid) for c, sid in zip(connections, ids, strict=True)))
        done.set()
        await reader
    finally:
        for connection in connections:
            await connection.close()

    all_ids = [row["id"] for row in await db.fetch("SELECT id FROM revocations ORDER BY id")]
    assert len(all_ids) == len(ids) == 40
    assert seen == all_ids


async def test_the_cursor_pages_through_more_than_one_page(
    db: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    """More revocations than a page holds: pages follow each other without loss or repeat."""
    user, _ = await register_and_login(client)
    await db.execute(
        "INSERT INTO sessions (user_id, expires_at) SELECT $1, now() + interval '1 day'"
        " FROM generate_series(1, 25)",
        uuid.UUID(user["id"]),
    )
    await db.execute("UPDATE sessions SET revoked_at = now(), revoke_reason = 'admin'")

    seen: list[uuid.UUID] = []
    cursor = Cursor(0)
    while True:
        page = await read_after(db, cursor, limit=10)
        seen += [sid for sid, _ in page.sessions]
        cursor = page.cursor
        if not page.full:
            break

    assert sorted(seen) == sorted(r["id"] for r in await db.fetch("SELECT id FROM sessions"))
    assert len(seen) == 26


async def test_a_long_poll_is_woken_by_notify(
    make_settings: Any,
    clock: FakeClock,
    db: asyncpg.Connection,
    settings: Settings,
    found_nothing: asyncio.Event,
) -> None:
    """With polling every 30 s, a revocation still answers a waiting request at once: the
    NOTIFY woke it."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    async with serve(make_settings(revocation_poll_interval=30), clock) as client:
        _, pair = await register_and_login(client)
        start = await feed(client, credentials)
        # Listening before the request waits: a listener that connected later would wake it
        # anyway (anything revoked meanwhile is read then), NOTIFY or not.
        await listening(db)
        waiting = asyncio.create_task(feed(client, credentials, after=start["cursor"], wait=30))
        await found_nothing.wait()
        await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
        # A deadline against hanging, far inside the 30 s the poll alone would take.
        body = await asyncio.wait_for(waiting, 15)

    assert len(body["sessions"]) == 1


async def test_without_notifications_polling_still_delivers(
    make_settings: Any,
    clock: FakeClock,
    db: asyncpg.Connection,
    settings: Settings,
    found_nothing: asyncio.Event,
) -> None:
    """REVOCATION_LISTEN=false (as if behind PgBouncer): a waiting request learns of the
    revocation from its own polling (every 0.1 s here, not the default second)."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    polling = make_settings(revocation_listen=False, revocation_poll_interval=0.1)
    async with serve(polling, clock) as client:
        _, pair = await register_and_login(client)
        start = await feed(client, credentials)
        waiting = asyncio.create_task(feed(client, credentials, after=start["cursor"], wait=30))
        await found_nothing.wait()
        await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
        body = await asyncio.wait_for(waiting, 15)

    assert len(body["sessions"]) == 1


async def test_a_long_poll_with_nothing_new_answers_empty_when_wait_passes(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """wait=1 and nothing revoked: 200 with empty lists and a cursor to go on from."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)

    body = await feed(client, credentials, wait=1)

    assert body["sessions"] == []
    assert body["tokens"] == []
    assert Cursor.parse(body["cursor"]) >= Cursor(0)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("wait=31", 400, "invalid_request"),
        ("wait=-1", 400, "invalid_request"),
        ("wait=1.5", 400, "invalid_request"),
        ("after=bm90IGEgY3Vyc29y", 400, "invalid_request"),
        ("after=%00", 400, "invalid_request"),
        # v1.9999999999999999999 and v1.2^63: past a bigint.
        ("after=djEuOTk5OTk5OTk5OTk5OTk5OTk5OQ", 400, "invalid_request"),
        ("after=djEuOTIyMzM3MjAzNjg1NDc3NTgwOA", 400, "invalid_request"),
        ("wait=1&wait=2", 400, "invalid_request"),
        ("client_secret=x", 400, "invalid_request"),
    ],
)
async def test_bad_parameters_are_400(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    query: str,
    status: int,
    code: str,
) -> None:
    """A bad wait, cursor or parameter: a clear 400, nothing else said."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)

    response = await client.get(f"/oauth/revocations?{query}", headers=basic(*credentials))

    assert (response.status_code, response.json()["error"]) == (status, code)
    assert set(response.json()) == {"error", "error_description"}


async def test_the_feed_needs_client_authentication(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """No credentials, or wrong ones: 401 invalid_client, as introspection."""
    client_id, _ = await create_client(db, settings, scope=FEED_SCOPE)

    missing = await client.get("/oauth/revocations")
    wrong = await client.get("/oauth/revocations", headers=basic(client_id, "wrong"))

    assert (missing.status_code, missing.json()["error"]) == (401, "invalid_client")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize("scope", ["", "read write", "admin", "revocations", "revocations:write"])
async def test_only_a_client_granted_revocations_read_reads_the_feed(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, scope: str
) -> None:
    """A registered client without the scope `revocations:read` gets 403 insufficient_scope
    and no entry; one granted it reads; the grant taken back, it is refused at once."""
    _, pair = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    other = await create_client(db, settings, scope=scope)
    granted = await create_client(db, settings, scope=f"{scope} revocations:read".strip())

    refused = await client.get("/oauth/revocations", headers=basic(*other))
    served = await client.get("/oauth/revocations", headers=basic(*granted))
    await db.execute("UPDATE clients SET scopes = $2 WHERE client_id = $1", granted[0], [])
    taken_back = await client.get("/oauth/revocations", headers=basic(*granted))

    assert (refused.status_code, refused.json()["error"]) == (403, "insufficient_scope")
    assert set(refused.json()) == {"error", "error_description"}
    assert served.status_code == 200
    assert len(served.json()["sessions"]) == 1
    assert (taken_back.status_code, taken_back.json()["error"]) == (403, "insufficient_scope")


class FeedRequestEnded(logging.Handler):
    """Sets `ended` when the access log records a request to the feed, keeping the record."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "route", None) == "/oauth/revocations":
            self.records.append(record)
            self.ended.set()


def feed_counts(metrics: str) -> dict[str, float]:
    pattern = re.compile(
        r'^token_service_http_requests_total\{method="GET",route="/oauth/revocations",'
        r'status="(\d+)"\} (\S+)$',
        re.MULTILINE,
    )
    return {status: float(value) for status, value in pattern.findall(metrics)}


async def test_a_long_poll_whose_client_has_gone_ends_at_once_as_499(
    db: asyncpg.Connection, settings: Settings
) -> None:
    """A follower asks with wait=30 and closes its connection: the wait ends then (the access
    line comes long before 30 s), logged and counted as 499, not as a 200 nobody read."""
    client_id, secret = await create_client(db, settings, scope=FEED_SCOPE)
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    access = logging.getLogger("tokenrota.access")
    watcher = FeedRequestEnded()
    access.addHandler(watcher)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        async with uvicorn_serving(settings) as address:
            before = feed_counts((await get(address, "/metrics")).text)
            with socket.create_connection(address, timeout=MARGIN_SECONDS) as connection:
                connection.sendall(
                    b"GET /oauth/revocations?wait=30 HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Basic " + credentials.encode() + b"\r\n\r\n"
                )
            # Far less than the 30 s the poll would otherwise be held.
            ended = await asyncio.to_thread(watcher.ended.wait, MARGIN_SECONDS)
            after = feed_counts((await get(address, "/metrics")).text)
    finally:
        access.removeHandler(watcher)
        access.setLevel(level)

    assert ended
    assert [record.status for record in watcher.records] == [499]
    assert after.get("499", 0) - before.get("499", 0) == 1
    assert after.get("200", 0) == before.get("200", 0)


def test_a_cursor_round_trips_and_refuses_forgeries() -> None:
    """encode/parse are inverse; anything else is refused."""
    cursor = Cursor(123456789)

    assert Cursor.parse(cursor.encode()) == cursor
    for forged in ("", "abc", Cursor(1).encode() + "x", "MS4yLjM"):
        with pytest.raises(Exception, match="cursor"):
            Cursor.parse(forged)


async def test_deleting_an_expired_or_revoked_session_adds_nothing(
    db: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings
) -> None:
    """Purging what has ended is not a revocation: only a live session's DELETE is."""
    user, pair = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    before = await db.fetchval("SELECT count(*) FROM revocations")

    await db.execute("DELETE FROM sessions WHERE user_id = $1", uuid.UUID(user["id"]))

    assert await db.fetchval("SELECT count(*) FROM revocations") == before == 1


async def test_the_purge_drops_feed_rows_no_token_can_need(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, clock: FakeClock
) -> None:
    """A revocation older than ACCESS_TOKEN_TTL + JWT_LEEWAY is purged; a newer one stays."""
    _, old = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": old["refresh_token"]})
    clock.advance(settings.access_token_ttl + settings.jwt_leeway)
    _, recent = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": recent["refresh_token"]})
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)

    try:
        batches = await purge.purge_expired(pool, settings, now=clock())
    finally:
        await pool.close()

    assert sum(batch.revocations for batch in batches) == 1
    assert await db.fetchval("SELECT count(*) FROM revocations") == 1


async def test_a_process_listens_only_once_the_feed_is_read(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """No LISTEN connection while no one follows the feed (a login and a logout, each a
    revocation, are not reasons to hold one); the feed's first read opens it."""
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    _, pair = await register_and_login(client)
    await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
    # Requests enough round trips after the start for a listener opened at start to be up.
    await client.get("/readyz")
    before = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )

    await feed(client, credentials)
    await listening(db)

    assert before == 0


async def test_the_listener_reconnects_after_losing_its_connection(
    make_settings: Any,
    clock: FakeClock,
    db: asyncpg.Connection,
    settings: Settings,
    found_nothing: asyncio.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The LISTEN connection is killed (a Postgres restart, a proxy): the process listens again,
    and a later revocation still wakes a waiting request, with polling every 30 s."""
    # The pause before listening again: 0.05 s rather than the second a restarting server gets.
    monkeypatch.setattr(revocations, "LISTEN_RETRY_SECONDS", 0.05)
    credentials = await create_client(db, settings, scope=FEED_SCOPE)
    async with serve(make_settings(revocation_poll_interval=30), clock) as client:
        _, pair = await register_and_login(client)
        start = await feed(client, credentials)  # the feed's first read starts the listener
        await listening(db)
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        await listening(db)
        waiting = asyncio.create_task(feed(client, credentials, after=start["cursor"], wait=30))
        await found_nothing.wait()
        await client.post("/logout", json={"refresh_token": pair["refresh_token"]})
        body = await asyncio.wait_for(waiting, 15)

    assert killed == 1
    assert len(body["sessions"]) == 1
