"""Use cases: getting back into an account (password reset) and proving an email (verification).

`forgot` answers the same for any well-formed email: for one with an active account it stores a
reset token and queues its message, in one statement that does the same work when there is no
account; no argon2 runs. `reset_password` spends the token with a compare-and-set, so of
concurrent resets with one token exactly one succeeds; it changes the password, ends every
session and every other reset token of the user (`commit_password_reset`, the one place a reset
commits). Messages are never sent from a request: they wait in the outbox (`outbox.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from tokenrota_server import mailer
from tokenrota_server.auth import SessionUser
from tokenrota_server.config import Settings
from tokenrota_server.db import account_tokens, audit, sessions, throttle, users
from tokenrota_server.db.account_tokens import Purpose
from tokenrota_server.db.pool import Connection
from tokenrota_server.email_address import normalize_email
from tokenrota_server.errors import AlreadyVerified, InvalidAccountToken, TooManyAttempts
from tokenrota_server.mailer import Mail
from tokenrota_server.outbox import Outbox
from tokenrota_server.passwords import Passwords, check_password_policy

security_log = logging.getLogger("tokenrota.security")


@dataclass(frozen=True)
class CommittedReset:
    """What a committed reset changed."""

    user_id: UUID
    sessions_revoked: int


class Recovery:
    """Password reset and email verification, with their dependencies passed in."""

    def __init__(self, settings: Settings, passwords: Passwords, outbox: Outbox) -> None:
        self._settings = settings
        self._passwords = passwords
        self._outbox = outbox

    async def forgot(
        self, pool: asyncpg.Pool, *, email: str, ip: str | None, now: datetime
    ) -> None:
        """Send a reset message if `email` has an active account; raise `InvalidInput` or
        `TooManyAttempts`. Nothing in the outcome or its timing tells whether it had one."""
        # Normalised once: the throttle counts the mailbox, however it was spelt.
        email = normalize_email(email)
        token, digest = account_tokens.new_token()
        # Composed and sealed whether or not it will be sent: the same work either way.
        mail = mailer.reset_mail(self._settings, email, token)
        queued = False
        # One transaction, so one durable commit whether or not the email has an account (the
        # token's rows would otherwise cost a known email a second WAL flush); the count is
        # committed even when it refuses the request.
        async with pool.acquire() as connection, connection.transaction():
            retry_after = await throttle.count_forgot(
                connection, self._settings, email=email, ip=ip, now=now
            )
            if retry_after is None:
                queued = await self._issue(
                    connection,
                    mail,
                    email=email,
                    purpose=Purpose.PASSWORD_RESET,
                    token_digest=digest,
                    now=now,
                    ttl=self._settings.password_reset_ttl,
                )
        if retry_after is not None:
            security_log.warning("password reset request throttled", extra={"ip": ip})
            raise TooManyAttempts(retry_after)
        if queued:
            self._outbox.wake()
        security_log.info("password reset requested", extra={"ip": ip})

    async def reset_password(
        self, pool: asyncpg.Pool, *, token: str, new_password: str, now: datetime
    ) -> None:
        """Set a new password with a reset token; raise `WeakPassword` or `InvalidAccountToken`.

        The token is looked at before argon2 runs (a made-up one costs no hashing) and spent
        after, in the transaction that changes the password; a token spent in between (a
        concurrent reset) is refused then.
        """
        check_password_policy(new_password)
        if not account_tokens.is_well_formed(token):
            raise InvalidAccountToken()
        digest = account_tokens.digest_of(token)
        purpose = None
        async with pool.acquire() as connection:
            # An operator's invitation is spent here too: it sets the first password.
            for candidate in (Purpose.PASSWORD_RESET, Purpose.INVITATION):
                if await account_tokens.is_open(
                    connection, token_digest=digest, purpose=candidate, now=now
                ):
                    purpose = candidate
                    break
        if purpose is None:
            raise InvalidAccountToken()
        password_hash = await self._passwords.hash(new_password)
        async with pool.acquire() as connection, connection.transaction():
            committed = await commit_password_reset(
                connection,
                token_digest=digest,
                password_hash=password_hash,
                now=now,
                purpose=purpose,
            )
        if committed is None:
            raise InvalidAccountToken()
        security_log.warning(
            "password reset; every session revoked",
            extra={"user_id": committed.user_id, "sessions": committed.sessions_revoked},
        )

    async def request_verification(
        self, pool: asyncpg.Pool, caller: SessionUser, *, ip: str | None, now: datetime
    ) -> None:
        """Send the caller a verification message; raise `AlreadyVerified` or `TooManyAttempts`.

        Counted with the reset requests of the same email and address: each sends a message
        to that mailbox, and the limit is on messages.
        """
        if caller.user.email_verified:
            raise AlreadyVerified()
        async with pool.acquire() as connection:
            retry_after = await throttle.count_forgot(
                connection, self._settings, email=caller.user.email, ip=ip, now=now
            )
        if retry_after is not None:
            security_log.warning("verification request throttled", extra={"ip": ip})
            raise TooManyAttempts(retry_after)
        await self.send_verification(pool, caller.user, now=now)

    async def send_verification(
        self, pool: asyncpg.Pool, user: users.User, *, now: datetime
    ) -> None:
        """Queue a verification message to `user`, superseding their earlier ones."""
        token, digest = account_tokens.new_token()
        mail = mailer.verification_mail(self._settings, user.email, token)
        async with pool.acquire() as connection:
            queued = await self._issue(
                connection,
                mail,
                user_id=user.id,
                purpose=Purpose.EMAIL_VERIFICATION,
                token_digest=digest,
                now=now,
                ttl=self._settings.email_verification_ttl,
            )
        if queued:
            self._outbox.wake()
            security_log.info("email verification sent", extra={"user_id": user.id})

    async def verify_email(self, pool: asyncpg.Pool, *, token: str, now: datetime) -> None:
        """Mark the token's user's email verified; raise `InvalidAccountToken`."""
        if not account_tokens.is_well_formed(token):
            raise InvalidAccountToken()
        digest = account_tokens.digest_of(token)
        async with pool.acquire() as connection, connection.transaction():
            await account_tokens.lock_user_of(
                connection, token_digest=digest, purpose=Purpose.EMAIL_VERIFICATION
            )
            user_id = await account_tokens.spend(
                connection, token_digest=digest, purpose=Purpose.EMAIL_VERIFICATION, now=now
            )
            if user_id is not None:
                await users.mark_email_verified(connection, user_id, now)
        if user_id is None:
            raise InvalidAccountToken()
        security_log.info("email verified", extra={"user_id": user_id})

    async def queue_mail(
        self, connection: Connection, user: users.User, *, purpose: Purpose, now: datetime
    ) -> bool:
        """In the caller's transaction: issue the user a token of `purpose` (superseding their
        open ones of it) and queue its message; False if the user is disabled. Call `wake`
        after the commit."""
        token, digest = account_tokens.new_token()
        compose, ttl = {
            Purpose.PASSWORD_RESET: (mailer.reset_mail, self._settings.password_reset_ttl),
            Purpose.EMAIL_VERIFICATION: (
                mailer.verification_mail,
                self._settings.email_verification_ttl,
            ),
            Purpose.INVITATION: (mailer.invitation_mail, self._settings.invitation_ttl),
        }[purpose]
        return await self._issue(
            connection,
            compose(self._settings, user.email, token),
            user_id=user.id,
            purpose=purpose,
            token_digest=digest,
            now=now,
            ttl=ttl,
        )

    def wake(self) -> None:
        """Tell the outbox that messages were queued (and committed)."""
        self._outbox.wake()

    async def _issue(
        self,
        connection: Connection,
        mail: Mail,
        *,
        purpose: Purpose,
        token_digest: bytes,
        now: datetime,
        ttl: int,
        email: str | None = None,
        user_id: UUID | None = None,
    ) -> bool:
        sealer = self._outbox.sealer
        return await account_tokens.issue(
            connection,
            email=email,
            user_id=user_id,
            purpose=purpose,
            token_digest=token_digest,
            now=now,
            expires_at=now + timedelta(seconds=ttl),
            subject=mail.subject,
            sealed_text=sealer.seal(mail.text),
            sealed_html=sealer.seal(mail.html),
        )


async def commit_password_reset(
    connection: Connection,
    *,
    token_digest: bytes,
    password_hash: str,
    now: datetime,
    purpose: Purpose = Purpose.PASSWORD_RESET,
) -> CommittedReset | None:
    """Within the caller's transaction: spend the reset (or invitation) token and apply the
    reset; None if the token is not open (then nothing is written).

    The one place a reset commits. Applying it: the new password, every session revoked, every
    other reset and invitation token superseded, the email counted as verified (the token came
    through it), and an audit event, all in the caller's transaction.
    """
    await account_tokens.lock_user_of(connection, token_digest=token_digest, purpose=purpose)
    user_id = await account_tokens.spend(
        connection, token_digest=token_digest, purpose=purpose, now=now
    )
    if user_id is None:
        return None
    await users.update_password_hash(connection, user_id, password_hash, now)
    await users.mark_email_verified(connection, user_id, now)
    for ended in (Purpose.PASSWORD_RESET, Purpose.INVITATION):
        await account_tokens.supersede(connection, user_id=user_id, purpose=ended, now=now)
    revoked = await sessions.revoke_user_sessions(
        connection, user_id=user_id, reason=sessions.RevokeReason.PASSWORD_RESET, now=now
    )
    await audit.record(
        connection,
        audit.AuditAction.PASSWORD_RESET
        if purpose is Purpose.PASSWORD_RESET
        else audit.AuditAction.INVITATION_ACCEPTED,
        actor=audit.user_actor(user_id),
        now=now,
        user_id=user_id,
        details={"sessions_revoked": revoked},
    )
    return CommittedReset(user_id=user_id, sessions_revoked=revoked)
