"""The sessions table as the code sees it: what it may say about why a session ended."""

from __future__ import annotations

import asyncpg
from tokenrota_server.db.sessions import RevokeReason


async def test_every_revoke_reason_is_one_the_schema_accepts(db: asyncpg.Connection) -> None:
    """A reason the CHECK constraint did not list would fail the revocation that wrote it."""
    definition = await db.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conname = 'sessions_revoke_reason_check'"
    )

    for reason in RevokeReason:
        assert f"'{reason}'" in definition, reason
