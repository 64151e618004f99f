"""Use cases a signed-in user runs on their own account: list and end sessions, change password.

Every one acts for a `SessionUser`, the caller that `Authenticator.authenticate` found behind a
bearer access token with the same stateful check as /profile: a revoked session's access token
can do none of this.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from uuid import UUID

import asyncpg

from tokenrota_server import session_policy
from tokenrota_server.auth import SessionUser
from tokenrota_server.config import Settings
from tokenrota_server.db import account_tokens, audit, sessions, throttle, users
from tokenrota_server.errors import InvalidCredentials, NotFound, TooManyAttempts
from tokenrota_server.passwords import MAX_PASSWORD_LENGTH, Passwords, check_password_policy

security_log = logging.getLogger("tokenrota.security")


class Accounts:
    """Session management and password change, with their dependencies passed in."""

    def __init__(self, settings: Settings, passwords: Passwords) -> None:
        self._settings = settings
        self._passwords = passwords

    async def list_sessions(
        self, pool: asyncpg.Pool, caller: SessionUser, *, now: datetime
    ) -> list[sessions.SessionInfo]:
        """The caller's live sessions."""
        async with pool.acquire() as connection:
            return await sessions.list_live_sessions(
                connection,
                user_id=caller.user.id,
                now=now,
                idle_since=session_policy.idle_since(self._settings, now),
            )

    async def rename_session(
        self,
        pool: asyncpg.Pool,
        caller: SessionUser,
        *,
        session_id: UUID,
        name: str | None,
        now: datetime,
    ) -> None:
        """Label one of the caller's live sessions (None clears it); raise `NotFound` for any
        other id, as `revoke_session` does."""
        async with pool.acquire() as connection:
            renamed = await sessions.rename_session(
                connection, user_id=caller.user.id, session_id=session_id, name=name, now=now
            )
        if not renamed:
            raise NotFound("No such session.")

    async def revoke_session(
        self, pool: asyncpg.Pool, caller: SessionUser, *, session_id: UUID, now: datetime
    ) -> None:
        """Revoke one of the caller's live sessions; raise `NotFound` for any other id.

        Another user's session and an unknown id are the same `NotFound`, so the answer never
        tells whether someone else's session exists.
        """
        async with pool.acquire() as connection:
            revoked = await sessions.revoke_user_session(
                connection,
                user_id=caller.user.id,
                session_id=session_id,
                reason=sessions.RevokeReason.USER_REVOKED,
                now=now,
            )
        if not revoked:
            raise NotFound("No such session.")
        security_log.info(
            "session revoked by its user",
            extra={"user_id": caller.user.id, "session_id": session_id},
        )

    async def logout_all(self, pool: asyncpg.Pool, caller: SessionUser, *, now: datetime) -> int:
        """Revoke every session of the caller, their own included; return how many."""
        async with pool.acquire() as connection:
            count = await sessions.revoke_user_sessions(
                connection, user_id=caller.user.id, reason=sessions.RevokeReason.LOGOUT_ALL, now=now
            )
        security_log.info("all sessions revoked", extra={"user_id": caller.user.id})
        return count

    async def change_password(
        self,
        pool: asyncpg.Pool,
        caller: SessionUser,
        *,
        current_password: str,
        new_password: str,
        now: datetime,
        ip: str | None,
    ) -> None:
        """Replace the password and revoke every other session of the caller.

        Raises `WeakPassword` for a new password outside the policy (checked first: it costs no
        hashing), `InvalidCredentials` when the current password is wrong, `TooManyAttempts`
        past the login throttle and `Overloaded` when argon2's queues are full (before anything
        is counted). No connection is held while argon2 runs.
        """
        check_password_policy(new_password)
        user_id = caller.user.id
        if len(current_password) > MAX_PASSWORD_LENGTH:
            raise InvalidCredentials()
        with contextlib.ExitStack() as held:
            async with pool.acquire() as connection, connection.transaction():
                # Both places (the check of the current password, the hash of the new one)
                # before the attempt is counted, as at /login: a 503 for overload counts
                # nothing, and a counted attempt is neither refused before its check nor, once
                # right, before its hash (a right password left counted, never given back).
                check = held.enter_context(self._passwords.reserve_check())
                new_secret = held.enter_context(self._passwords.reserve_hash())
                # Guessing the current password through /password counts toward the throttle.
                attempt = await throttle.count_attempt(
                    connection, self._settings, email=caller.user.email, ip=ip, now=now
                )
                if attempt.retry_after is not None:
                    # Refused: its place goes back now, before the connection is let go, so a
                    # refused flood holds at most one place per pool connection.
                    held.close()
                await audit.record_throttle_burst(
                    connection, crossed=attempt.crossed, user_id=caller.user.id, ip=ip, now=now
                )
            if attempt.retry_after is not None:
                security_log.warning("password change throttled", extra={"user_id": caller.user.id})
                raise TooManyAttempts(attempt.retry_after)
            found = attempt.credentials
            if found is not None and (found.user.id != caller.user.id or found.disabled):
                found = None
            matched = await self._passwords.verify(
                found.password_hash if found else None, current_password, reservation=check
            )
            if found is None or not matched:
                security_log.info("password change refused", extra={"user_id": caller.user.id})
                raise InvalidCredentials()
            new_hash = await self._passwords.hash(new_password, reservation=new_secret)
        async with pool.acquire() as connection, connection.transaction():
            await throttle.forgive_attempt(
                connection, self._settings, email=caller.user.email, ip=ip
            )
            await users.update_password_hash(connection, user_id, new_hash, now)
            await sessions.revoke_user_sessions(
                connection,
                user_id=user_id,
                reason=sessions.RevokeReason.PASSWORD_CHANGE,
                now=now,
                keep=caller.session_id,
            )
            # A reset link sent before the change must not undo it.
            await account_tokens.supersede(
                connection,
                user_id=user_id,
                purpose=account_tokens.Purpose.PASSWORD_RESET,
                now=now,
            )
            await audit.record(
                connection,
                audit.AuditAction.PASSWORD_CHANGED,
                actor=audit.user_actor(user_id),
                now=now,
                user_id=user_id,
                ip=ip,
            )
        security_log.info(
            "password changed; other sessions revoked", extra={"user_id": caller.user.id}
        )


async def disable_user(
    pool: asyncpg.Pool, *, email: str, now: datetime, actor: str = audit.CLI_ACTOR
) -> int:
    """Disable a user and end all their sessions at once; return how many were ended.

    Raises `NotFound` for an unknown email. One transaction: no session outlives the flag,
    and the audit event (by `actor`) commits with them.
    """
    async with pool.acquire() as connection, connection.transaction():
        user_id = await users.disable_user(connection, email, now)
        if user_id is None:
            raise NotFound("No user has this email.")
        ended = await sessions.revoke_user_sessions(
            connection, user_id=user_id, reason=sessions.RevokeReason.USER_DISABLED, now=now
        )
        # A link mailed before the disable must not outlive it into a later enable.
        await account_tokens.void_user_tokens(connection, user_id=user_id, now=now)
        await audit.record(
            connection,
            audit.AuditAction.USER_DISABLED,
            actor=actor,
            now=now,
            user_id=user_id,
            details={"sessions_revoked": ended},
        )
    security_log.info("user disabled", extra={"user_id": user_id, "sessions": ended})
    return ended
