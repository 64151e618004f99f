"""The throttles' counters, kept in Postgres so that every instance shares them.

Password attempts count per email and per address (taken back on success), registrations, reset
requests and passkey request options per scope of their own, in fixed windows; a key over its
limit is read, not written. The reasons are in docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from tokenrota_server.config import Settings
from tokenrota_server.db.pool import Connection
from tokenrota_server.db.users import Credentials, user_from_row

EMAIL_SCOPE = "email"
ADDRESS_SCOPE = "ip"
REGISTER_SCOPE = "register_ip"
FORGOT_EMAIL_SCOPE = "forgot_email"
FORGOT_ADDRESS_SCOPE = "forgot_ip"
MFA_USER_SCOPE = "mfa_user"
MFA_TOKEN_SCOPE = "mfa_token"  # noqa: S105 - a scope's name
PASSKEY_OPTIONS_SCOPE = "passkey_options_ip"


@dataclass(frozen=True)
class CountedAttempt:
    """An attempt, counted: the account it names (if any), and how long to wait if refused."""

    credentials: Credentials | None
    retry_after: int | None
    # The scopes ("email", "ip") whose limit this very attempt crossed: the first refusal of
    # a window, which the audit log records once rather than on every refused attempt.
    crossed: tuple[str, ...] = ()


def email_key(email: str) -> bytes:
    """The digest that keys an email's counter: case-insensitive, as emails are unique."""
    return hashlib.sha256(email.lower().encode()).digest()


def address_key(address: str) -> bytes:
    return hashlib.sha256(address.encode()).digest()


# $1 scopes, $2 key digests, $3 each key's limit, $4 now, $5 now less one window: a window
# begun by then is over.
#
# A key already over its limit in a window still running is only read, not counted: `over`
# reads it without a lock, and the upsert skips it (by scope: a request's keys have one scope
# each). Before, every refused request of a flood from one address upserted that address's one
# row: the refusals queued on the row's lock, each holding it and a pool connection until its
# commit's WAL flush, one flush after another (docs/benchmarks.md, "A /register flood"). A
# request whose every key is over writes nothing at all: no row lock, no transaction id, no WAL,
# so its commit flushes nothing. The rows still counted are locked in the keys' order, as before.
#
# Why no answer changes:
# - Counting past the limit only raised a number that already refused. A count goes down only
#   when an email's counter is cleared (a success, an erasure), which clears it whatever it
#   was, or when an address is given an attempt back, which `forgive_address_attempt` no longer
#   does for an address over its limit (see there). Retry-After depends on window_started_at
#   alone, which a skipped key keeps.
# - The limit still holds under concurrency: `over` reads the last committed counts, and a key
#   that is under there (or is being counted by a transaction not yet committed) goes through
#   the upsert, which locks the row, counts on its newest version and stays the authority. Only
#   a key committed over is skipped, and being over it can only refuse.
# - A request is refused if any of its keys is over; its other keys are still counted as before
#   (a login refused for its email still counts against its address), so each key's count is
#   the same as before until it is over.
# - The audit record of a crossing comes from `counted` alone (the upsert that took a key from
#   its limit to one past it), never from a skipped row, so it is written once per window.
_COUNTING = """
    k AS (
        SELECT * FROM unnest($1::text[], $2::bytea[], $3::int[]) AS k(scope, key_digest, maximum)
    ),
    over AS (
        SELECT a.scope, a.attempts, a.window_started_at, false AS counted
        FROM login_attempts a JOIN k USING (scope, key_digest)
        WHERE a.window_started_at > $5 AND a.attempts > k.maximum
    ),
    counted AS (
        INSERT INTO login_attempts AS a (scope, key_digest, attempts, window_started_at)
        SELECT k.scope, k.key_digest, 1, $4
        FROM k WHERE k.scope NOT IN (SELECT scope FROM over)
        ON CONFLICT (scope, key_digest) DO UPDATE SET
            attempts = CASE WHEN a.window_started_at <= $5 THEN 1 ELSE a.attempts + 1 END,
            window_started_at = CASE WHEN a.window_started_at <= $5 THEN $4
                                     ELSE a.window_started_at END
        RETURNING a.scope, a.attempts, a.window_started_at, true AS counted
    ),
    keys AS (SELECT * FROM counted UNION ALL SELECT * FROM over)
"""

# Constants joined; every value is a parameter.
_UPSERT = f"WITH {_COUNTING} SELECT scope, attempts, window_started_at, counted FROM keys"  # noqa: S608
_COUNT = f"""
WITH {_COUNTING}
SELECT c.scope, c.attempts, c.window_started_at, c.counted, u.id, u.email, u.created_at,
       u.email_verified_at, u.password_hash,
       u.disabled_at IS NOT NULL AS disabled,
       EXISTS (SELECT 1 FROM mfa_factors f WHERE f.user_id = u.id AND f.verified_at IS NOT NULL)
           AS has_factor
FROM keys c LEFT JOIN users u ON lower(u.email) = lower($6)
"""  # noqa: S608


async def count_attempt(
    connection: Connection, settings: Settings, *, email: str, ip: str | None, now: datetime
) -> CountedAttempt:
    """Count one password attempt for `email` and `ip`, and read the account of `email`.

    One statement: the upsert is atomic per key, so concurrent attempts are all counted.
    """
    scopes, keys = [EMAIL_SCOPE], [email_key(email)]
    if ip is not None:
        scopes.append(ADDRESS_SCOPE)
        keys.append(address_key(ip))
    return await _count(connection, settings, email, scopes, keys, now)


async def count_address_attempt(
    connection: Connection, settings: Settings, *, ip: str, now: datetime
) -> int | None:
    """Count one attempt against the remote address alone; the seconds to wait, if over.

    For OAuth client authentication: a client secret cannot be guessed, but each wrong one
    costs an argon2 verification, so a flood of them from one address is refused like logins.
    """
    counted = await _count(connection, settings, "", [ADDRESS_SCOPE], [address_key(ip)], now)
    return counted.retry_after


async def count_registration(
    connection: Connection, settings: Settings, *, ip: str | None, now: datetime
) -> int | None:
    """Count one registration against the remote address; the seconds to wait, if over.

    Counted before the email is looked up or hashed for, so a refusal is the same whether or
    not the email has an account. Requests without an address (a server that gives none) share
    one counter rather than go unlimited.
    """
    limits = {REGISTER_SCOPE: settings.register_ip_max_attempts}
    return await _count_keys(connection, settings, limits, [address_key(ip or "")], now)


async def count_passkey_options(
    connection: Connection, settings: Settings, *, ip: str | None, now: datetime
) -> int | None:
    """Count one request for passkey request options against the remote address; the seconds
    to wait, if over. Each writes a challenge row, asked for without any credential. Requests
    without an address share one counter, as registrations do."""
    limits = {PASSKEY_OPTIONS_SCOPE: settings.passkey_options_ip_max_attempts}
    return await _count_keys(connection, settings, limits, [address_key(ip or "")], now)


async def count_forgot(
    connection: Connection, settings: Settings, *, email: str, ip: str | None, now: datetime
) -> int | None:
    """Count one reset request against the email and the address; the seconds to wait, if over.

    Counted alike for an email with or without an account. Requests without an address share
    one counter, as registrations do.
    """
    limits = {
        FORGOT_EMAIL_SCOPE: settings.password_forgot_email_max_attempts,
        FORGOT_ADDRESS_SCOPE: settings.password_forgot_ip_max_attempts,
    }
    keys = [email_key(email), address_key(ip or "")]
    return await _count_keys(connection, settings, limits, keys, now)


async def count_second_factor(
    connection: Connection,
    settings: Settings,
    *,
    user_id: UUID,
    token_digest: bytes | None,
    now: datetime,
) -> int | None:
    """Count one second-factor attempt against the user and, at /login/mfa, the mfa token;
    the seconds to wait, if over. Counted before the code is looked at, right or wrong."""
    limits = {MFA_USER_SCOPE: settings.mfa_user_max_attempts}
    keys = [hashlib.sha256(user_id.bytes).digest()]
    if token_digest is not None:
        limits[MFA_TOKEN_SCOPE] = settings.mfa_token_max_attempts
        keys.append(token_digest)
    return await _count_keys(connection, settings, limits, keys, now)


async def forgive_second_factor(connection: Connection, user_id: UUID) -> None:
    """After a second factor was accepted: clear the user's counter."""
    await connection.execute(
        "DELETE FROM login_attempts WHERE scope = $1 AND key_digest = $2",
        MFA_USER_SCOPE,
        hashlib.sha256(user_id.bytes).digest(),
    )


async def _count_keys(
    connection: Connection,
    settings: Settings,
    limits: dict[str, int],
    keys: list[bytes],
    now: datetime,
) -> int | None:
    """Count one attempt against each key, under the scope of `limits` in the same order, each
    scope's limit its value; the seconds to wait if any key is over."""
    window = timedelta(seconds=settings.login_throttle_window)
    rows = await connection.fetch(_UPSERT, [*limits], keys, [*limits.values()], now, now - window)
    return _wait(rows, limits, window, now)


async def _count(
    connection: Connection,
    settings: Settings,
    email: str,
    scopes: list[str],
    keys: list[bytes],
    now: datetime,
) -> CountedAttempt:
    window = timedelta(seconds=settings.login_throttle_window)
    limits = {
        EMAIL_SCOPE: settings.login_email_max_attempts,
        ADDRESS_SCOPE: settings.login_ip_max_attempts,
    }
    maximums = [limits[scope] for scope in scopes]
    rows = await connection.fetch(_COUNT, scopes, keys, maximums, now, now - window, email)
    credentials = None
    first = rows[0]
    if first["id"] is not None:
        credentials = Credentials(
            user_from_row(first),
            password_hash=first["password_hash"],
            disabled=first["disabled"],
            has_factor=first["has_factor"],
        )
    # Only a counted key can have crossed: a skipped one was over already.
    crossed = tuple(
        row["scope"]
        for row in rows
        if row["counted"] and row["attempts"] == limits[row["scope"]] + 1
    )
    return CountedAttempt(
        credentials=credentials, retry_after=_wait(rows, limits, window, now), crossed=crossed
    )


def _wait(
    rows: list[asyncpg.Record], limits: dict[str, int], window: timedelta, now: datetime
) -> int | None:
    """Whole seconds until the latest-ending window of a key over its limit ends; None if none."""
    waits = [
        (row["window_started_at"] + window - now).total_seconds()
        for row in rows
        if row["attempts"] > limits[row["scope"]]
    ]
    return max(1, math.ceil(max(waits))) if waits else None


async def forgive_attempt(
    connection: Connection, settings: Settings, *, email: str, ip: str | None
) -> None:
    """After a success: clear the email's counter and take the attempt back from the address
    (unless the address is over its limit: see `forgive_address_attempt`).

    Two statements, the email's row first: the order in which `count_attempt` locks the same
    two rows. One statement with a DELETE in a WITH ran its parts in no set order; when it
    took the address's row first, in a login's transaction, while a concurrent attempt held
    the email's row and waited for the address's, Postgres broke the deadlock with a 500.
    """
    await connection.execute(
        "DELETE FROM login_attempts WHERE scope = $1 AND key_digest = $2",
        EMAIL_SCOPE,
        email_key(email),
    )
    if ip is not None:  # without an address, `count_attempt` counted none
        await forgive_address_attempt(connection, settings, ip=ip)


async def forgive_address_attempt(connection: Connection, settings: Settings, *, ip: str) -> None:
    """After a success (a login, a client authenticated): take its attempt back from the
    address, unless the address is over LOGIN_IP_MAX_ATTEMPTS.

    Why not when over: a key over its limit is no longer counted (`_COUNTING`), so its count
    stops one past the limit. Before, each refused attempt raised it further, and an address
    reopened within its window only once as many successes as refused attempts, plus one, had
    been taken back (successes of attempts in flight when the limit was crossed: nothing else
    gets through). Taking back from the stopped count would reopen it after two, whatever the
    refusals: one more guess than before. Left over, the address stays refused until its
    window ends: never looser than before, and a crossing is recorded once per window.
    """
    await connection.execute(
        "UPDATE login_attempts SET attempts = greatest(attempts - 1, 0)"
        " WHERE scope = $1 AND key_digest = $2 AND attempts <= $3",
        ADDRESS_SCOPE,
        address_key(ip),
        settings.login_ip_max_attempts,
    )


async def forget_email(connection: Connection, email: str) -> None:
    """Delete the email's counter (the user is erased: not even its digest stays)."""
    await connection.execute(
        "DELETE FROM login_attempts WHERE scope = $1 AND key_digest = $2",
        EMAIL_SCOPE,
        email_key(email),
    )
