"""Deleting what has expired, in batches, so that rows do not pile up.

Refresh tokens and sessions past `expires_at`, throttle counters of past windows, client token
revocations that no longer verify anyway, account tokens and sent outbox messages a day after
use, audit events past `AUDIT_RETENTION`, DPoP proofs past their window, passkey challenges
past their two minutes. Each batch is a short transaction under an advisory lock, so with
several instances one purges at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from tokenrota.clock import Clock

from tokenrota_server.config import Settings
from tokenrota_server.db import audit, dpop_proofs, factors, mfa_tokens, passkeys
from tokenrota_server.db.pool import CONNECTION_ERRORS, Connection, rows_affected

logger = logging.getLogger("tokenrota.purge")

# Any fixed 64-bit number that nothing else in the database uses as an advisory lock key.
PURGE_LOCK_KEY = 0x70757267_65303031  # "purge001"
# How long spent account tokens and finished outbox messages are kept: long enough to look
# into a complaint, short enough to keep little.
MAIL_RETENTION = timedelta(days=1)
# A TOTP factor enrolled but never verified: the enrolment was abandoned.
PENDING_FACTOR_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class PurgeBatch:
    """How many rows one batch deleted, table by table."""

    refresh_tokens: int
    sessions: int
    login_attempts: int
    revoked_access_tokens: int
    account_tokens: int = 0
    mail_messages: int = 0
    audit_events: int = 0
    revocations: int = 0
    dpop_proofs: int = 0
    webauthn_challenges: int = 0
    mfa_tokens: int = 0
    pending_factors: int = 0

    @property
    def total(self) -> int:
        return (
            self.refresh_tokens
            + self.sessions
            + self.login_attempts
            + self.revoked_access_tokens
            + self.account_tokens
            + self.mail_messages
            + self.audit_events
            + self.revocations
            + self.dpop_proofs
            + self.webauthn_challenges
            + self.mfa_tokens
            + self.pending_factors
        )


async def delete_expired_batch(
    connection: Connection,
    *,
    now: datetime,
    throttle_window: int,
    batch_size: int,
    leeway: int,
    audit_retention: int | None = None,
    access_token_ttl: int = 0,
) -> PurgeBatch:
    """Delete up to `batch_size` expired rows of each table. Deleting a session deletes its
    tokens with it (ON DELETE CASCADE); those are not counted."""
    sessions = await connection.execute(
        "DELETE FROM sessions WHERE id IN"
        " (SELECT id FROM sessions WHERE expires_at <= $1 LIMIT $2)",
        now,
        batch_size,
    )
    tokens = await connection.execute(
        "DELETE FROM refresh_tokens WHERE id IN"
        " (SELECT id FROM refresh_tokens WHERE expires_at <= $1 LIMIT $2)",
        now,
        batch_size,
    )
    attempts = await connection.execute(
        "DELETE FROM login_attempts WHERE (scope, key_digest) IN"
        " (SELECT scope, key_digest FROM login_attempts WHERE window_started_at <= $1 LIMIT $2)",
        now - timedelta(seconds=throttle_window),
        batch_size,
    )
    # A token is still accepted `leeway` seconds past its exp: its revocation must outlive that.
    revocations = await connection.execute(
        "DELETE FROM revoked_access_tokens WHERE jti IN"
        " (SELECT jti FROM revoked_access_tokens WHERE expires_at <= $1 LIMIT $2)",
        now - timedelta(seconds=leeway),
        batch_size,
    )
    account_tokens = await connection.execute(
        "DELETE FROM account_tokens WHERE token_digest IN"
        " (SELECT token_digest FROM account_tokens WHERE least(expires_at,"
        " coalesce(used_at, 'infinity'), coalesce(superseded_at, 'infinity')) <= $1 LIMIT $2)",
        now - MAIL_RETENTION,
        batch_size,
    )
    # Sent, or given up: next_attempt_at is NULL once nothing more will be tried.
    mail = await connection.execute(
        "DELETE FROM mail_outbox WHERE id IN (SELECT id FROM mail_outbox"
        " WHERE next_attempt_at IS NULL AND coalesce(sent_at, created_at) <= $1 LIMIT $2)",
        now - MAIL_RETENTION,
        batch_size,
    )
    audit_events = (
        await audit.delete_older_than(
            connection, cutoff=now - timedelta(seconds=audit_retention), batch_size=batch_size
        )
        if audit_retention is not None
        else 0
    )
    # The feed's rows, once no token they stop can still be accepted (the first read's window).
    feed = await connection.execute(
        "DELETE FROM revocations WHERE id IN (SELECT id FROM revocations WHERE revoked_at <= $1"
        " AND (expires_at IS NULL OR expires_at <= $2) LIMIT $3)",
        now - timedelta(seconds=access_token_ttl + leeway),
        now - timedelta(seconds=leeway),
        batch_size,
    )
    proofs = await dpop_proofs.delete_expired(connection, now=now, batch_size=batch_size)
    challenges = await passkeys.delete_expired_challenges(
        connection, now=now, batch_size=batch_size
    )
    tickets = await mfa_tokens.delete_expired(connection, now=now, batch_size=batch_size)
    pending = await factors.delete_stale_pending(
        connection, created_before=now - PENDING_FACTOR_RETENTION, batch_size=batch_size
    )
    return PurgeBatch(
        refresh_tokens=rows_affected(tokens),
        sessions=rows_affected(sessions),
        login_attempts=rows_affected(attempts),
        revoked_access_tokens=rows_affected(revocations),
        account_tokens=rows_affected(account_tokens),
        mail_messages=rows_affected(mail),
        audit_events=audit_events,
        revocations=rows_affected(feed),
        dpop_proofs=proofs,
        webauthn_challenges=challenges,
        mfa_tokens=tickets,
        pending_factors=pending,
    )


async def purge_expired(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    now: datetime,
    wait: bool = False,
    on_batch: Callable[[int, PurgeBatch], None] | None = None,
) -> list[PurgeBatch]:
    """Delete every expired row, batch by batch, until a batch finds nothing more.

    With `wait`, a batch waits for another instance's batch to finish; without it, the purge
    stops as soon as another instance is found purging (it will do the work).
    """
    # Transaction-level: a session-level lock would outlive the batch, since the pool hands
    # connections back without a reset (db/pool.py).
    lock = (
        "SELECT pg_advisory_xact_lock($1) IS NOT NULL"
        if wait
        else "SELECT pg_try_advisory_xact_lock($1)"
    )
    batches: list[PurgeBatch] = []
    while True:
        async with pool.acquire() as connection, connection.transaction():
            if not await connection.fetchval(lock, PURGE_LOCK_KEY):
                return batches
            batch = await delete_expired_batch(
                connection,
                now=now,
                throttle_window=settings.login_throttle_window,
                batch_size=settings.purge_batch_size,
                leeway=settings.jwt_leeway,
                audit_retention=settings.audit_retention,
                access_token_ttl=settings.access_token_ttl,
            )
        if batch.total == 0:
            return batches
        batches.append(batch)
        if on_batch is not None:
            on_batch(len(batches), batch)


async def purge_periodically(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> None:
    """Purge every `PURGE_INTERVAL` seconds until cancelled; a failed round is logged, not fatal."""
    while True:
        await asyncio.sleep(settings.purge_interval)
        try:
            batches = await purge_expired(pool, settings, now=clock())
        except CONNECTION_ERRORS as error:
            logger.warning("purge skipped: database unavailable (%s)", type(error).__name__)
            continue
        except asyncpg.PostgresError:
            logger.exception("purge failed")
            continue
        if batches:
            logger.info(
                "purged %d expired rows in %d batches", sum(b.total for b in batches), len(batches)
            )
