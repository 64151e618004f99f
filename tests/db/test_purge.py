"""Purging expired rows (`tokenrota purge` and the server's timer), and disabling a user
(`tokenrota disable-user`), against a real Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from tokenrota_server.config import Settings
from tokenrota_server.db.pool import create_pool
from tokenrota_server.db.purge import purge_expired

from tests import support
from tests.mail_support import queued_token
from tests.support import PROJECT_ROOT, FakeClock, Login, Register, RegisterAndLogin, Serve


async def run_cli(database_url: str, *arguments: str, **environ: str) -> tuple[int, str, str]:
    """Run `tokenrota ARGUMENTS` against the test's database."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrota_server",
        *arguments,
        cwd=PROJECT_ROOT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "ENV": "test",
            "DATABASE_URL": database_url,
            "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
            "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
            "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
            **environ,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def arrange_expired_and_live(client: httpx.AsyncClient, db: asyncpg.Connection) -> Any:
    """A live session with two spent-and-expired tokens and a live one; an expired session with
    its tokens; a stale and a fresh throttle counter. Returns the live session's newest pair."""
    _, pair = await support.register_and_login(client)
    for _ in range(2):
        pair = (await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})).json()
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 minute'"
        " WHERE used_at IS NOT NULL"
    )
    gone_user, gone = await support.register_and_login(client)
    await client.post("/refresh", json={"refresh_token": gone["refresh_token"]})
    await db.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1",
        uuid.UUID(gone_user["id"]),
    )
    await db.execute(
        "INSERT INTO login_attempts (scope, key_digest, attempts, window_started_at) VALUES"
        " ('ip', sha256('stale'), 5, now() - interval '2 hours'),"
        " ('ip', sha256('fresh'), 5, now())"
    )
    return pair


async def test_purge_command_deletes_only_what_expired_in_batches(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    """Expired tokens, sessions and counters go, batch by batch; everything live stays."""
    pair = await arrange_expired_and_live(client, db)
    live_session = await db.fetchval("SELECT id FROM sessions WHERE expires_at > now()")
    live_token = await db.fetchval(
        "SELECT id FROM refresh_tokens WHERE expires_at > now() AND session_id = $1", live_session
    )

    code, out, err = await run_cli(database_url, "purge", PURGE_BATCH_SIZE="1")

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "batch 1: deleted 1 refresh tokens, 1 sessions, 1 login counters, 0 token revocations"
    )
    assert lines[1] == (
        "batch 2: deleted 1 refresh tokens, 0 sessions, 0 login counters, 0 token revocations"
    )
    assert lines[-1] == "purge done: 4 rows in 2 batches"
    assert await db.fetchval("SELECT array_agg(id) FROM sessions") == [live_session]
    assert await db.fetchval("SELECT array_agg(id) FROM refresh_tokens") == [live_token]
    remaining = await db.fetch("SELECT key_digest FROM login_attempts")
    keys = {bytes(row["key_digest"]) for row in remaining}
    assert hashlib.sha256(b"fresh").digest() in keys
    assert hashlib.sha256(b"stale").digest() not in keys
    again = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 200


async def test_purge_forgets_revocations_only_once_their_tokens_cannot_verify(
    settings: Settings, database_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    """A revocation goes once its token is past exp plus the leeway; until then it must stay."""
    await db.execute(
        "INSERT INTO clients (client_id, name, secret_hash) VALUES ('c0ffee', 'billing', 'h')"
    )
    now = clock()
    leeway = timedelta(seconds=settings.jwt_leeway)
    for jti, expires_at in (
        ("long-expired", now - leeway - timedelta(seconds=1)),
        ("within-leeway", now - leeway + timedelta(seconds=1)),
        ("live", now + timedelta(minutes=5)),
    ):
        await db.execute(
            "INSERT INTO revoked_access_tokens (jti, client_id, expires_at, revoked_at)"
            " VALUES ($1, 'c0ffee', $2, $3)",
            jti,
            expires_at,
            now - timedelta(minutes=20),
        )
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        batches = await purge_expired(pool, settings, now=now, wait=True)
    finally:
        await pool.close()

    assert [batch.revoked_access_tokens for batch in batches] == [1]
    kept = await db.fetchval("SELECT array_agg(jti ORDER BY jti) FROM revoked_access_tokens")
    assert kept == ["live", "within-leeway"]


async def test_purge_with_nothing_expired_deletes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    database_url: str,
    register_and_login: RegisterAndLogin,
) -> None:
    """A database of live rows comes out of a purge unchanged."""
    await register_and_login(client)

    code, out, _ = await run_cli(database_url, "purge")

    assert code == 0
    assert out.strip() == "purge done: 0 rows in 0 batches"
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 1


async def test_two_instances_purging_at_once_delete_each_row_once(
    settings: Settings, database_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    """Concurrent purges with small batches: all expired rows go, no error, no live row lost."""
    await db.execute(
        "INSERT INTO users (id, email, password_hash) VALUES (gen_random_uuid(), 'a@x.io', 'h')"
    )
    await db.execute(
        "INSERT INTO sessions (user_id, expires_at) SELECT id, now() + interval '1 day' FROM users"
    )
    await db.execute(
        "INSERT INTO refresh_tokens (session_id, token_digest, issued_at, expires_at)"
        " SELECT s.id, sha256(n::text::bytea), now() - interval '8 days',"
        " now() + CASE WHEN n % 4 = 0 THEN interval '1 day' ELSE interval '-1 day' END"
        " FROM sessions s, generate_series(1, 2000) n"
    )
    small = replace(settings, purge_batch_size=50)
    pools = [await create_pool(database_url, min_size=1, max_size=1) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(purge_expired(pool, small, now=clock(), wait=True) for pool in pools)
        )
    finally:
        for pool in pools:
            await pool.close()

    deleted = sum(batch.refresh_tokens for batches in results for batch in batches)
    assert deleted == 1500
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 500
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE expires_at <= now()") == 0


async def test_the_server_purges_on_its_timer(
    make_settings: Any,
    clock: FakeClock,
    db: asyncpg.Connection,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """With PURGE_INTERVAL=0.1, a session past its absolute expiry disappears by itself."""
    async with serve(make_settings(purge_interval=0.1), clock) as client:
        await register_and_login(client)
        clock.advance(timedelta(days=31).total_seconds())

        for _ in range(100):
            if await db.fetchval("SELECT count(*) FROM sessions") == 0:
                break
            await asyncio.sleep(0.1)

        assert await db.fetchval("SELECT count(*) FROM sessions") == 0
        assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 0


async def test_disable_user_ends_every_session_at_once(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    database_url: str,
    login: Login,
    register: Register,
    register_and_login: RegisterAndLogin,
) -> None:
    """disable-user: every session revoked (user_disabled), refresh 403, login 401."""
    user = await register(client)
    pairs = [await login(client, user["email"]) for _ in range(2)]
    _, bystander = await register_and_login(client)

    code, out, err = await run_cli(database_url, "disable-user", user["email"].upper())

    assert code == 0, err
    assert out.strip() == "user disabled; 2 sessions ended"
    reasons = await db.fetch(
        "SELECT s.revoke_reason FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE u.email = $1",
        user["email"],
    )
    assert [row["revoke_reason"] for row in reasons] == ["user_disabled"] * 2
    for pair in pairs:
        assert (
            await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        ).status_code == 403
        profile = await client.get(
            "/profile", headers={"Authorization": f"Bearer {pair['access_token']}"}
        )
        assert profile.status_code == 403
    relogin = await client.post(
        "/login", json={"email": user["email"], "password": "correct horse battery"}
    )
    assert relogin.status_code == 401
    assert (
        await client.post("/refresh", json={"refresh_token": bystander["refresh_token"]})
    ).status_code == 200


async def test_disable_user_voids_an_open_reset_link(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    database_url: str,
    settings: Settings,
    register: Register,
) -> None:
    """disable-user ends the user's open reset tokens: enabled again, the old link is dead.
    The email may be typed with its domain in any spelling (here Unicode, in capitals)."""
    user = await register(client, email="ann@xn--bcher-kva.example")
    await client.post("/password/forgot", json={"email": user["email"]})
    token = await queued_token(db, settings, user["email"])

    code, _, err = await run_cli(database_url, "disable-user", "Ann@BÜCHER.example")
    await db.execute("UPDATE users SET disabled_at = NULL")
    reset = await client.post(
        "/password/reset", json={"token": token, "new_password": "a new horse battery"}
    )

    assert code == 0, err
    assert reset.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM account_tokens WHERE superseded_at IS NULL") == 0


async def test_disable_user_with_an_unknown_email_fails_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    database_url: str,
    register_and_login: RegisterAndLogin,
) -> None:
    """An unknown email: exit status 1 and a one-line error."""
    await register_and_login(client)

    code, _, err = await run_cli(database_url, "disable-user", "nobody@example.com")

    assert code == 1
    assert err.strip() == "error: No user has this email."
    assert await db.fetchval("SELECT count(*) FROM users WHERE disabled_at IS NOT NULL") == 0
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL") == 0


async def test_purge_deletes_account_tokens_and_messages_a_day_after_they_are_done(
    settings: Settings, database_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    """Tokens a day past expiry, use or supersession go, and messages a day after being sent or
    given up; an open token, a fresh spent one and a message still to send stay."""
    now = clock()
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'h') RETURNING id"
    )
    day, hour = timedelta(days=1), timedelta(hours=1)
    for n, (expires_at, used_at, superseded_at) in enumerate(
        [
            (now + hour, None, None),  # open: kept
            (now - day - hour, None, None),  # expired a day ago: gone
            (now + hour, now - day - hour, None),  # used a day ago: gone
            (now + hour, None, now - day - hour),  # superseded a day ago: gone
            (now + hour, now - hour, None),  # used an hour ago: kept
        ]
    ):
        await db.execute(
            "INSERT INTO account_tokens (token_digest, purpose, user_id, created_at, expires_at,"
            " used_at, superseded_at) VALUES ($1, 'password_reset', $2, $3, $4, $5, $6)",
            bytes([n]) * 32,
            user_id,
            now - 2 * day,
            expires_at,
            used_at,
            superseded_at,
        )
    for subject, sent_at, next_attempt_at in [
        ("sent long ago", now - day - hour, None),
        ("given up long ago", None, None),
        ("sent just now", now - hour, None),
        ("still to send", None, now + hour),
    ]:
        await db.execute(
            "INSERT INTO mail_outbox (recipient, subject, text_body, html_body, created_at,"
            " sent_at, next_attempt_at) VALUES ('a@example.com', $1, '', '', $2, $3, $4)",
            subject,
            now - 2 * day,
            sent_at,
            next_attempt_at,
        )
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        batches = await purge_expired(pool, settings, now=now, wait=True)
    finally:
        await pool.close()

    assert [(b.account_tokens, b.mail_messages) for b in batches] == [(3, 2)]
    kept = await db.fetch("SELECT token_digest FROM account_tokens ORDER BY 1")
    assert [bytes(row["token_digest"])[0] for row in kept] == [0, 4]
    subjects = await db.fetch("SELECT subject FROM mail_outbox ORDER BY subject")
    assert [row["subject"] for row in subjects] == ["sent just now", "still to send"]
