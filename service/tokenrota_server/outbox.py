"""The mail outbox's drainer: messages written with what they announce, sent afterwards.

Each instance drains in the background (`Outbox.run`, in the lifespan), every
`MAIL_POLL_INTERVAL` seconds and at once after a request of its own wrote a message; a failure
is retried with backoff up to `MAX_ATTEMPTS`. The bodies hold a live token, so they are stored
sealed (Fernet, under a key derived from REFRESH_TOKEN_SECRET) and blanked once sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from tokenrota.clock import Clock

from tokenrota_server import mailer
from tokenrota_server.config import Settings
from tokenrota_server.db.outbox import mark_failed, mark_sent, take_due
from tokenrota_server.db.pool import CONNECTION_ERRORS, Connection
from tokenrota_server.mailer import DeliveryFailed, Mail, MailboxBell

logger = logging.getLogger("tokenrota.mail")

MAX_ATTEMPTS = 10
FIRST_RETRY_DELAY = 30  # seconds; doubled at each failure
MAX_RETRY_DELAY = 3600

Send = Callable[[Mail, int, datetime], Awaitable[None]]


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failure: 30 s, 60 s, ... at most an hour."""
    return timedelta(seconds=min(FIRST_RETRY_DELAY * 2 ** (attempts - 1), MAX_RETRY_DELAY))


class Sealer:
    """Seals and opens message bodies with a key derived from the refresh secret."""

    def __init__(self, settings: Settings) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"tokenrota mail outbox"
        ).derive(str(settings.refresh_token_secret).encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def __repr__(self) -> str:
        return "Sealer()"

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def open(self, sealed: str) -> str | None:
        """The text, or None if it was sealed under another secret (rotated since)."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            return None


async def deliver_due(pool: asyncpg.Pool, sealer: Sealer, send: Send, *, now: datetime) -> int:
    """Send every message due at `now`, one per transaction; return how many were sent.

    A message that fails is rescheduled (`retry_delay`) and not tried again in this round.
    """
    sent = 0
    while True:
        async with pool.acquire() as connection, connection.transaction():
            message = await take_due(connection, now)
            if message is None:
                return sent
            attempts = message.attempts + 1
            text, body = sealer.open(message.text_body), sealer.open(message.html_body)
            try:
                if text is None or body is None:
                    raise DeliveryFailed("sealed under another secret")
                await send(Mail(message.recipient, message.subject, text, body), message.id, now)
            except DeliveryFailed as failure:
                await _failed(connection, message.id, attempts, failure.reason, now)
                continue
            await mark_sent(connection, message.id, attempts=attempts, now=now)
        sent += 1
        logger.info("mail sent", extra={"mail_id": message.id, "attempts": attempts})


async def _failed(
    connection: Connection,
    mail_id: int,
    attempts: int,
    reason: str,
    now: datetime,
) -> None:
    retry_at = now + retry_delay(attempts) if attempts < MAX_ATTEMPTS else None
    await mark_failed(connection, mail_id, attempts=attempts, reason=reason, retry_at=retry_at)
    if retry_at is None:
        logger.error(
            "mail given up after %d attempts: %s", attempts, reason, extra={"mail_id": mail_id}
        )
    else:
        logger.warning(
            "mail delivery failed (%s); retrying at %s",
            reason,
            retry_at.isoformat(),
            extra={"mail_id": mail_id, "attempts": attempts},
        )


class Outbox:
    """This instance's drainer of the outbox: run in the lifespan, woken by requests."""

    def __init__(self, settings: Settings, clock: Clock, bell: MailboxBell | None = None) -> None:
        self._settings = settings
        self._clock = clock
        self.sealer = Sealer(settings)
        self.bell = bell or MailboxBell()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A message was just committed: look now rather than at the next poll."""
        self._wake.set()

    async def send(self, mail: Mail, mail_id: int, now: datetime) -> None:
        """Deliver one message in a thread (smtplib and file writes block)."""
        await asyncio.to_thread(mailer.deliver, self._settings, mail, name=str(mail_id), now=now)
        self.bell.ring()

    async def run(self, pool: asyncpg.Pool) -> None:
        """Drain until cancelled; a round that fails on the database is logged, not fatal."""
        while True:
            try:
                await deliver_due(pool, self.sealer, self.send, now=self._clock())
            except CONNECTION_ERRORS as error:
                logger.warning("mail skipped: database unavailable (%s)", type(error).__name__)
            except Exception:
                # Whatever went wrong with one round, the next may go through: a drainer that
                # died here would leave every later message unsent.
                logger.exception("mail round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.mail_poll_interval)
            self._wake.clear()
