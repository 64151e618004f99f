"""SQL for `dpop_proofs`: the DPoP proofs already accepted, by key thumbprint and jti."""

from __future__ import annotations

from datetime import datetime

from tokenrota_server.db.pool import Connection, rows_affected


async def record_first_use(
    connection: Connection, *, jkt: str, jti: str, expires_at: datetime
) -> bool:
    """Record a proof; False when this key's `jti` was recorded before (a replay)."""
    inserted = await connection.fetchval(
        "INSERT INTO dpop_proofs (jkt, jti, expires_at) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true",
        jkt,
        jti,
        expires_at,
    )
    return inserted is True


async def delete_expired(connection: Connection, *, now: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` proofs too old to be accepted again; how many."""
    status = await connection.execute(
        "DELETE FROM dpop_proofs WHERE (jkt, jti) IN"
        " (SELECT jkt, jti FROM dpop_proofs WHERE expires_at <= $1 LIMIT $2)",
        now,
        batch_size,
    )
    return rows_affected(status)
