"""Session policy: idle sessions end (SESSION_IDLE_TIMEOUT), and a periodic sweep revokes them
so that they reach the revocation feed (reason `idle`).

A session is idle once `SESSION_IDLE_TIMEOUT` seconds pass without a refresh (its `last_used_at`).
/refresh and /profile refuse an idle session at once, whether or not the sweep has run; the sweep
turns it into a revocation, which resource servers following the feed learn of. It runs every
`idle_sweep_interval` seconds: a quarter of the timeout, between 1 and 60 s.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import asyncpg
from tokenrota.clock import Clock

from tokenrota_server.config import Settings
from tokenrota_server.db import sessions
from tokenrota_server.db.pool import CONNECTION_ERRORS

logger = logging.getLogger("tokenrota.sessions")


def idle_since(settings: Settings, now: datetime) -> datetime | None:
    """Sessions last used at or before this moment are idle; None when the timeout is off."""
    if settings.session_idle_timeout <= 0:
        return None
    return now - timedelta(seconds=settings.session_idle_timeout)


def idle_sweep_interval(settings: Settings) -> float:
    """How often the sweep runs: often enough that an idle session reaches the feed soon."""
    return float(min(60, max(1, settings.session_idle_timeout // 4)))


async def sweep_idle_sessions(pool: asyncpg.Pool, settings: Settings, now: datetime) -> int:
    """Revoke every idle session (reason `idle`); return how many."""
    cutoff = idle_since(settings, now)
    if cutoff is None:
        return 0
    async with pool.acquire() as connection:
        return await sessions.revoke_idle_sessions(connection, idle_since=cutoff, now=now)


async def sweep_idle_periodically(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> None:
    """Sweep until cancelled; a failed round is logged, not fatal."""
    while True:
        await asyncio.sleep(idle_sweep_interval(settings))
        try:
            ended = await sweep_idle_sessions(pool, settings, clock())
        except CONNECTION_ERRORS as error:
            logger.warning("idle sweep skipped: database unavailable (%s)", type(error).__name__)
            continue
        except asyncpg.PostgresError:
            logger.exception("idle sweep failed")
            continue
        if ended:
            logger.info("revoked %d idle sessions", ended)
