"""Use cases of operators acting on accounts by mail: creating a user (with an invitation
to choose a password), and sending a user a reset or a verification message.

A user created here has a password nobody knows (the hash of 256 random bits, so a login
costs and answers as for any wrong password) until they choose one: through the invitation
(INVITATION_TTL, spent at /password/reset, which also verifies the email), a reset an
operator sends, or /password/forgot. Each change commits with its audit event and its
message; the message leaves after the commit (the outbox).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from uuid import UUID

import asyncpg

from tokenrota_server.db import audit, roles, users
from tokenrota_server.db.account_tokens import Purpose
from tokenrota_server.db.audit import AuditAction
from tokenrota_server.email_address import normalize_email
from tokenrota_server.errors import AlreadyVerified, InvalidInput, NotFound
from tokenrota_server.passwords import Passwords
from tokenrota_server.recovery import Recovery

security_log = logging.getLogger("tokenrota.security")


async def create_user(
    pool: asyncpg.Pool,
    passwords: Passwords,
    recovery: Recovery,
    *,
    email: str,
    invite: bool,
    role_names: tuple[str, ...],
    actor: str,
    now: datetime,
) -> users.AdminUser:
    """Create a user with `role_names`, and with `invite` mail them a link to choose their
    password; raise `InvalidInput` (a bad email, an unknown role: nothing written) or
    `EmailTaken`."""
    mailbox = normalize_email(email)
    unusable = await passwords.hash(secrets.token_urlsafe(32))
    async with pool.acquire() as connection, connection.transaction():
        unknown = await roles.unknown_roles(connection, role_names)
        if unknown:
            raise InvalidInput("No role has this name: " + ", ".join(unknown)[:200] + ".")
        user = await users.insert_user(connection, email=mailbox, password_hash=unusable, now=now)
        if role_names:
            await roles.set_user_roles(connection, user.id, role_names)
        await audit.record(
            connection,
            AuditAction.USER_CREATED,
            actor=actor,
            now=now,
            user_id=user.id,
            details={"roles": list(role_names), "invited": invite},
        )
        if invite:
            await recovery.queue_mail(connection, user, purpose=Purpose.INVITATION, now=now)
            await audit.record(
                connection, AuditAction.USER_INVITED, actor=actor, now=now, user_id=user.id
            )
        created = await users.find_admin_user(connection, user.id, now)
    if invite:
        recovery.wake()
    security_log.info("user created by an operator", extra={"user_id": user.id})
    assert created is not None
    return created


async def send_account_mail(
    pool: asyncpg.Pool,
    recovery: Recovery,
    user_id: UUID,
    *,
    purpose: Purpose,
    actor: str,
    now: datetime,
) -> None:
    """Mail the user a reset or a verification link (superseding their earlier ones of that
    kind); raise `NotFound`, `AlreadyVerified` (verification of a verified email) or
    `InvalidInput` (a disabled user gets no link)."""
    async with pool.acquire() as connection, connection.transaction():
        user = await users.find_user(connection, user_id)
        if user is None:
            raise NotFound("No such user.")
        if purpose is Purpose.EMAIL_VERIFICATION and user.email_verified:
            raise AlreadyVerified()
        if not await recovery.queue_mail(connection, user, purpose=purpose, now=now):
            raise InvalidInput("The user is disabled: enable them first.")
        action = (
            AuditAction.PASSWORD_RESET_SENT
            if purpose is Purpose.PASSWORD_RESET
            else AuditAction.VERIFICATION_SENT
        )
        await audit.record(connection, action, actor=actor, now=now, user_id=user_id)
    recovery.wake()
