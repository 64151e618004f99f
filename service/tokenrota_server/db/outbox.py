"""SQL of `mail_outbox`: taking the next due message, marking it sent or failed.

Messages are written with the token they announce (`account_tokens`); the bodies are sealed
by the caller (`tokenrota_server.outbox`), so nothing here sees a token in clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tokenrota_server.db.pool import Connection


@dataclass(frozen=True)
class OutboxMessage:
    """A message due for delivery, its bodies (`text_body`, `html_body`) still sealed."""

    id: int
    recipient: str
    subject: str
    text_body: str
    html_body: str
    attempts: int


async def take_due(connection: Connection, now: datetime) -> OutboxMessage | None:
    """The oldest message due at `now`, locked until the transaction ends; None if none.

    `SKIP LOCKED`: another drainer's message is passed over, so none is sent twice.
    """
    row = await connection.fetchrow(
        "SELECT id, recipient, subject, text_body, html_body, attempts FROM mail_outbox"
        " WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT 1"
        " FOR UPDATE SKIP LOCKED",
        now,
    )
    return None if row is None else OutboxMessage(**dict(row))


async def mark_sent(connection: Connection, mail_id: int, *, attempts: int, now: datetime) -> None:
    """Record the delivery and blank the bodies: the token they carried is not kept, even
    sealed."""
    await connection.execute(
        "UPDATE mail_outbox SET sent_at = $2, next_attempt_at = NULL, attempts = $3,"
        " last_error = NULL, text_body = '', html_body = '' WHERE id = $1",
        mail_id,
        now,
        attempts,
    )


async def mark_failed(
    connection: Connection,
    mail_id: int,
    *,
    attempts: int,
    reason: str,
    retry_at: datetime | None,
) -> None:
    """Record a failed delivery; `retry_at` None gives the message up."""
    await connection.execute(
        "UPDATE mail_outbox SET attempts = $2, last_error = $3, next_attempt_at = $4 WHERE id = $1",
        mail_id,
        attempts,
        reason,
        retry_at,
    )
