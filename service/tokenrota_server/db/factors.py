"""SQL for second factors (`mfa_factors`, every kind) and recovery codes (`mfa_recovery_codes`).

A factor counts once verified (`verified_at`); a TOTP factor keeps its secret sealed
(`mfa_crypto`) and the last time step it accepted, so a code is accepted once. A passkey's
credential lives in a table of its own that references its factor. Functions take the
connection first and own no transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from tokenrota_server.db.pool import Connection, rows_affected

MAX_NAME_LENGTH = 64


class FactorType(StrEnum):
    """A factor's kind: `mfa_factors.type`, which a CHECK constraint lists."""

    TOTP = "totp"
    PASSKEY = "passkey"


@dataclass(frozen=True)
class Factor:
    """One factor of a user, as listed; the sealed secret stays in `TotpState`."""

    id: UUID
    user_id: UUID
    type: FactorType
    name: str
    created_at: datetime
    last_used_at: datetime | None
    verified_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "type": self.type.value,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


@dataclass(frozen=True, repr=False)
class TotpState:
    """What checking a TOTP code needs of a factor: its sealed secret and last step."""

    factor_id: UUID
    sealed_secret: bytes
    last_step: int | None


@dataclass(frozen=True, repr=False)
class SecondFactorState:
    """Everything a second-factor step compares a code with: the live TOTP factors and the
    digests of the unused recovery codes."""

    totp: tuple[TotpState, ...]
    recovery_digests: tuple[bytes, ...]


_FACTOR_COLUMNS = "id, user_id, type, name, created_at, last_used_at, verified_at"


async def insert_totp(
    connection: Connection,
    *,
    factor_id: UUID,
    user_id: UUID,
    name: str,
    sealed_secret: bytes,
    now: datetime,
) -> Factor:
    """Store a TOTP factor, not yet verified."""
    row = await connection.fetchrow(
        "INSERT INTO mfa_factors (id, user_id, type, name, created_at, secret_ciphertext)"  # noqa: S608 - constants only
        f" VALUES ($1, $2, 'totp', $3, $4, $5) RETURNING {_FACTOR_COLUMNS}",
        factor_id,
        user_id,
        name,
        now,
        sealed_secret,
    )
    assert row is not None
    return _factor(row)


async def list_live_factors(connection: Connection, user_id: UUID) -> list[Factor]:
    """The user's verified factors, oldest first."""
    rows = await connection.fetch(
        f"SELECT {_FACTOR_COLUMNS} FROM mfa_factors"  # noqa: S608 - constants only
        " WHERE user_id = $1 AND verified_at IS NOT NULL ORDER BY created_at, id",
        user_id,
    )
    return [_factor(row) for row in rows]


async def has_live_factor(connection: Connection, user_id: UUID) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM mfa_factors"
            " WHERE user_id = $1 AND verified_at IS NOT NULL)",
            user_id,
        )
    )


async def find_pending_totp(
    connection: Connection, *, user_id: UUID, factor_id: UUID
) -> TotpState | None:
    """The user's TOTP factor `factor_id` while it awaits its first code."""
    row = await connection.fetchrow(
        "SELECT id, secret_ciphertext, last_step FROM mfa_factors"
        " WHERE id = $1 AND user_id = $2 AND type = 'totp' AND verified_at IS NULL",
        factor_id,
        user_id,
    )
    return _totp(row) if row is not None else None


async def mark_verified(
    connection: Connection, *, user_id: UUID, factor_id: UUID, step: int, now: datetime
) -> Factor | None:
    """Make a pending factor live, its first code's step accepted; None if it was not pending
    (verified meanwhile, or removed)."""
    row = await connection.fetchrow(
        "UPDATE mfa_factors SET verified_at = $3, last_used_at = $3, last_step = $4"  # noqa: S608 - constants only
        " WHERE id = $1 AND user_id = $2 AND verified_at IS NULL"
        f" RETURNING {_FACTOR_COLUMNS}",
        factor_id,
        user_id,
        now,
        step,
    )
    return _factor(row) if row is not None else None


async def second_factor_state(connection: Connection, user_id: UUID) -> SecondFactorState:
    """The user's live TOTP factors and unused recovery-code digests, in one statement."""
    row = await connection.fetchrow(
        "SELECT"
        " (SELECT coalesce(array_agg(ROW(id, secret_ciphertext, last_step) ORDER BY id), '{}')"
        "  FROM mfa_factors WHERE user_id = $1 AND type = 'totp' AND verified_at IS NOT NULL)"
        "  AS totp,"
        " (SELECT coalesce(array_agg(code_digest ORDER BY code_digest), '{}')"
        "  FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL) AS codes",
        user_id,
    )
    assert row is not None
    return SecondFactorState(
        totp=tuple(
            TotpState(factor_id=fid, sealed_secret=sealed, last_step=step)
            for fid, sealed, step in row["totp"]
        ),
        recovery_digests=tuple(row["codes"]),
    )


async def spend(
    connection: Connection,
    *,
    user_id: UUID,
    factor_id: UUID | None,
    step: int | None,
    code_digest: bytes | None,
    now: datetime,
) -> bool:
    """Accept a TOTP factor's `step` (only if later than its last one) or spend a recovery
    code, in one compare-and-set statement; False if neither was accepted. Run with NULLs for
    a wrong code too, so that every second-factor step makes the same round trip."""
    accepted = await connection.fetchval(
        "WITH totp AS ("
        "  UPDATE mfa_factors SET last_step = $3, last_used_at = $5"
        "  WHERE id = $2 AND user_id = $1 AND verified_at IS NOT NULL"
        "  AND (last_step IS NULL OR last_step < $3) RETURNING id"
        "), code AS ("
        "  UPDATE mfa_recovery_codes SET used_at = $5"
        "  WHERE user_id = $1 AND code_digest = $4 AND used_at IS NULL RETURNING user_id"
        ") SELECT (SELECT count(*) FROM totp) + (SELECT count(*) FROM code)",
        user_id,
        factor_id,
        step,
        code_digest,
        now,
    )
    return bool(accepted)


async def delete_factor(
    connection: Connection, *, user_id: UUID, factor_id: UUID
) -> FactorType | None:
    """Delete one of the user's factors (pending or live); its type, or None if there is none.
    With the user's last live factor go the recovery codes: they are a factor's fallback."""
    kind = await connection.fetchval(
        "DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2 RETURNING type",
        factor_id,
        user_id,
    )
    if kind is None:
        return None
    await connection.execute(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1 AND NOT EXISTS"
        " (SELECT 1 FROM mfa_factors WHERE user_id = $1 AND verified_at IS NOT NULL)",
        user_id,
    )
    return FactorType(kind)


async def replace_recovery_codes(
    connection: Connection, *, user_id: UUID, digests: list[bytes], now: datetime
) -> None:
    """Make `digests` the user's recovery codes; every older one dies."""
    await connection.execute("DELETE FROM mfa_recovery_codes WHERE user_id = $1", user_id)
    await connection.executemany(
        "INSERT INTO mfa_recovery_codes (user_id, code_digest, created_at) VALUES ($1, $2, $3)",
        [(user_id, digest, now) for digest in digests],
    )


async def count_unused_recovery_codes(connection: Connection, user_id: UUID) -> int:
    count = await connection.fetchval(
        "SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL", user_id
    )
    return int(count)


async def delete_stale_pending(
    connection: Connection, *, created_before: datetime, batch_size: int
) -> int:
    """Delete up to `batch_size` factors never verified and enrolled before `created_before`
    (the purge's: an enrolment abandoned half-way)."""
    status = await connection.execute(
        "DELETE FROM mfa_factors WHERE id IN (SELECT id FROM mfa_factors"
        " WHERE verified_at IS NULL AND created_at < $1 LIMIT $2)",
        created_before,
        batch_size,
    )
    return rows_affected(status)


def _factor(row: asyncpg.Record) -> Factor:
    return Factor(
        id=row["id"],
        user_id=row["user_id"],
        type=FactorType(row["type"]),
        name=row["name"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        verified_at=row["verified_at"],
    )


def _totp(row: asyncpg.Record) -> TotpState:
    return TotpState(
        factor_id=row["id"], sealed_secret=row["secret_ciphertext"], last_step=row["last_step"]
    )
