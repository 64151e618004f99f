"""Use cases: register, login, refresh (rotate, grace, reuse), logout, profile.

Each use case takes the pool and acquires a connection only for its database work: argon2 runs
for ~100 ms, and a login holding a connection through it would starve /refresh of connections.
Each database step is one statement, so it is its own transaction; the refresh path's winning
case is a single round trip.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from tokenrota.dpop import Proof

from tokenrota_server import dpop, session_policy, telemetry
from tokenrota_server.config import Settings
from tokenrota_server.db import audit, sessions, throttle, users
from tokenrota_server.db.pool import Connection
from tokenrota_server.db.sessions import NewToken
from tokenrota_server.email_address import normalize_email
from tokenrota_server.errors import (
    EmailUnverified,
    InvalidCredentials,
    InvalidDPoPProof,
    InvalidInput,
    InvalidToken,
    TooManyAttempts,
)
from tokenrota_server.outcomes import Grant, LoginOutcome, RefreshOutcome
from tokenrota_server.passwords import (
    MAX_PASSWORD_LENGTH,
    HashReservation,
    Passwords,
    check_password_policy,
    reserve_then_count,
)
from tokenrota_server.tokens import RefreshClaims, TokenCodec, token_digest

security_log = logging.getLogger("tokenrota.security")

MAX_USER_AGENT_LENGTH = 512


@dataclass(frozen=True, repr=False)
class TokenPair:
    """What /login and /refresh answer; repr hides the tokens."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    # False for a short session: a refresh cookie without Max-Age (gone with the browser).
    remember: bool = True
    # DPoP when the session is bound to a key (RFC 9449 §5).
    token_type: str = "Bearer"  # noqa: S105 - a token type's name

    def to_json(self) -> dict[str, str | int]:
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "refresh_expires_in": self.refresh_expires_in,
        }


@dataclass(frozen=True)
class SessionUser:
    """Who a bearer token speaks for: an active user and their live session."""

    user: users.User
    session_id: uuid.UUID


@dataclass(frozen=True)
class DeviceInfo:
    """What a login comes from, recorded on the session it starts: user agent and address."""

    user_agent: str | None = None
    ip: str | None = None


class Authenticator:
    """The use cases, with their dependencies passed in explicitly."""

    def __init__(self, settings: Settings, codec: TokenCodec, passwords: Passwords) -> None:
        self._settings = settings
        self._codec = codec
        self._passwords = passwords

    async def register(
        self, pool: asyncpg.Pool, *, email: str, password: str, now: datetime, ip: str | None
    ) -> users.User:
        """Create a user; raise `InvalidInput`, `WeakPassword`, `TooManyAttempts`, `Overloaded`
        or `EmailTaken`.

        The registration is counted against `ip` before argon2 runs and before the email is
        looked up: past the limit the answer is 429 whether or not the email is taken. Past
        ARGON2_MAX_QUEUED_HASHES waiting new secrets it is 503, before it is counted.
        """
        email = normalize_email(email)
        check_password_policy(password)
        with contextlib.ExitStack() as held:
            async with pool.acquire() as connection:
                reservation, retry_after = await reserve_then_count(
                    held,
                    self._passwords.reserve_hash,
                    lambda: throttle.count_registration(connection, self._settings, ip=ip, now=now),
                    refused=lambda retry_after: retry_after is not None,
                )
            if retry_after is not None:
                security_log.warning("register throttled", extra={"ip": ip})
                raise TooManyAttempts(retry_after)
            return await self.create_user(
                pool, email=email, password=password, now=now, reservation=reservation
            )

    async def create_user(
        self,
        pool: asyncpg.Pool,
        *,
        email: str,
        password: str,
        now: datetime,
        reservation: HashReservation | None = None,
    ) -> users.User:
        """Create a user, unthrottled (the operator's CLI); raise `InvalidInput`, `WeakPassword`,
        `Overloaded` (without the caller's `reservation`) or `EmailTaken`."""
        email = normalize_email(email)
        check_password_policy(password)
        password_hash = await self._passwords.hash(password, reservation=reservation)
        async with pool.acquire() as connection:
            user = await users.insert_user(
                connection, email=email, password_hash=password_hash, now=now
            )
        security_log.info("user registered", extra={"user_id": user.id})
        return user

    async def login(
        self,
        pool: asyncpg.Pool,
        *,
        email: str,
        password: str,
        now: datetime,
        device: DeviceInfo,
        remember: bool = True,
        proof: Proof | None = None,
    ) -> TokenPair:
        """Check the credentials and start a session; raise `InvalidCredentials`.

        With a checked DPoP `proof` the session is bound to its key: every token it issues
        names the key (`cnf.jkt`), and every refresh needs a proof by it. The proof is recorded
        (once, across instances) with the session, so a replayed one starts nothing.

        With DPOP_REQUIRED_FOR_SESSIONS a login without a proof is `InvalidDPoPProof`.

        `remember=False` starts a short session (SESSION_SHORT_MAX_AGE). With
        MAX_SESSIONS_PER_USER, the user's least recently used sessions beyond the cap are
        revoked (reason `session_limit`) in the transaction that starts the new one.

        An unknown email, a wrong password and a disabled user all cost one argon2 verification
        and end in the same error, so neither answer nor timing tells which it was. The outcome
        is recorded on the request (`LoginOutcome`).
        """
        if proof is None and self._settings.dpop_required_for_sessions:
            # Before the password: a refused login must not tell whether it was right.
            raise InvalidDPoPProof("A DPoP proof is required to start a session.")
        mailbox = _mailbox_or_none(email)
        if len(password) > MAX_PASSWORD_LENGTH or mailbox is None:
            # No account can have such a password or email: refuse before any hashing work,
            # and before a NUL byte or the like reaches Postgres. The same 401 as any wrong
            # credentials: login sends no mail, and a malformed email names no account.
            telemetry.record(login=LoginOutcome.FAILURE)
            raise InvalidCredentials()
        email = mailbox
        with contextlib.ExitStack() as held:
            async with pool.acquire() as connection, connection.transaction():
                reservation, attempt = await reserve_then_count(
                    held,
                    self._passwords.reserve_check,
                    lambda: throttle.count_attempt(
                        connection, self._settings, email=email, ip=device.ip, now=now
                    ),
                    refused=lambda attempt: attempt.retry_after is not None,
                )
                await audit.record_throttle_burst(
                    connection,
                    crossed=attempt.crossed,
                    user_id=attempt.credentials.user.id if attempt.credentials else None,
                    ip=device.ip,
                    now=now,
                )
            if attempt.retry_after is not None:
                telemetry.record(login=LoginOutcome.THROTTLED)
                security_log.warning(
                    "login throttled", extra={"ip": device.ip, "outcome": LoginOutcome.THROTTLED}
                )
                raise TooManyAttempts(attempt.retry_after)
            found = attempt.credentials
            matched = await self._passwords.verify(
                found.password_hash if found else None, password, reservation=reservation
            )
        if found is None or not matched or found.disabled:
            telemetry.record(login=LoginOutcome.FAILURE)
            security_log.info(
                "login failed",
                extra={
                    "user_id": found.user.id if found else None,
                    "outcome": LoginOutcome.FAILURE,
                },
            )
            raise InvalidCredentials()
        user = found.user
        if self._settings.require_verified_email and not user.email_verified:
            # Only now, with the password checked: a guesser learns nothing of the account.
            telemetry.record(login=LoginOutcome.FAILURE)
            security_log.info(
                "login refused: email not verified",
                extra={"user_id": user.id, "outcome": LoginOutcome.FAILURE},
            )
            raise EmailUnverified()
        rehash = (
            await self._passwords.rehash(password)
            if self._passwords.needs_rehash(found.password_hash)
            else None
        )

        session_id = uuid.uuid4()
        claims = self._codec.new_refresh_claims(
            subject=str(user.id),
            session_id=str(session_id),
            now=now,
            jkt=proof.jkt if proof is not None else None,
        )
        refresh_token = self._codec.mint_refresh(claims)
        max_age = self._settings.session_max_age
        if not remember:
            max_age = min(max_age, self._settings.session_short_max_age)
        session_expires_at = now + timedelta(seconds=max_age)
        cap = self._settings.max_sessions_per_user
        async with pool.acquire() as connection, connection.transaction():
            # The user's row first, as every writer of a user's rows takes it (erase deletes it,
            # and the email's throttle row with it). It also queues concurrent logins of one
            # user, so two of them cannot both count the sessions and both stay under the cap.
            await users.lock_user(connection, user.id)
            if cap > 0:
                await sessions.evict_least_recently_used(
                    connection, user_id=user.id, keep=cap - 1, now=now
                )
            if proof is not None:
                await dpop.record(connection, proof)
            await throttle.forgive_attempt(connection, self._settings, email=email, ip=device.ip)
            if rehash is not None:
                await users.update_password_hash(connection, user.id, rehash, now)
            try:
                grants = await sessions.create_session(
                    connection,
                    session_id=session_id,
                    user_id=user.id,
                    now=now,
                    expires_at=session_expires_at,
                    first_token=_new_token(refresh_token, claims),
                    user_agent=_printable(device.user_agent)[:MAX_USER_AGENT_LENGTH]
                    if device.user_agent
                    else None,
                    ip=device.ip,
                    remember=remember,
                )
            except asyncpg.ForeignKeyViolationError:
                # Erased (DELETE /admin/users/{id}) while argon2 ran: the same answer as for
                # an unknown email, not a 500.
                telemetry.record(login=LoginOutcome.FAILURE)
                raise InvalidCredentials() from None
        telemetry.record(login=LoginOutcome.SUCCESS, issued=Grant.LOGIN)
        security_log.info(
            "login succeeded",
            extra={
                "user_id": user.id,
                "session_id": session_id,
                "outcome": LoginOutcome.SUCCESS,
            },
        )
        live = sessions.LiveSession(
            user.id, user.email, session_expires_at, grants=grants, remember=remember
        )
        return self._pair(live, session_id, refresh_token, claims, now)

    async def refresh(
        self,
        pool: asyncpg.Pool,
        *,
        refresh_token: str,
        now: datetime,
        proof: Proof | None = None,
    ) -> TokenPair:
        """Trade a refresh token for a new pair; raise `InvalidToken`.

        A token of a DPoP-bound session needs a checked `proof` by its key, before anything is
        spent: without one it is refused (and audited); with another key's, the session is
        revoked as stolen. A proof sent for an unbound session is ignored.

        Checks, in order: the signature and claims; the row and its session; then rotates with
        a compare-and-set (with rotation off: keeps the token if it was never spent). A loser of
        that race, or a retry, within the reuse interval gets the same child again; any other use
        of a spent token revokes the whole session, whatever the mode. The outcome is recorded on
        the request (`RefreshOutcome`), except a refusal, which the caller records.
        """
        claims = self._codec.verify_refresh(refresh_token, now)
        user_id, session_id = _parse_uuid(claims.subject), _parse_uuid(claims.session_id)
        telemetry.annotate(user_id=user_id, session_id=session_id)
        digest = token_digest(refresh_token)
        # The bound session's proof, recorded on the connection that then uses the token.
        bound = None
        if claims.jkt is not None:
            bound = await self._check_binding(pool, claims, user_id, session_id, proof, now)

        if not self._settings.rotate_refresh_tokens:
            async with pool.acquire() as connection:
                if bound is not None:
                    await dpop.record(connection, bound)
                live = await sessions.touch_live(
                    connection,
                    token_digest=digest,
                    session_id=session_id,
                    now=now,
                    idle_since=session_policy.idle_since(self._settings, now),
                )
                if live is None:
                    # Spent by a rotating instance, or by this one before the setting changed:
                    # the same rules as when rotation loses, so no spent token works again.
                    return await self._spent(connection, claims, session_id, digest, now)
            if live.user_id != user_id:
                raise InvalidToken()
            telemetry.record(refresh=RefreshOutcome.UNROTATED, issued=Grant.REFRESH_TOKEN)
            return self._pair(live, session_id, refresh_token, claims, now)

        child_claims = self._codec.new_refresh_claims(
            subject=claims.subject,
            session_id=claims.session_id,
            now=now,
            jti=self._codec.child_jti(claims.jti),
            jkt=claims.jkt,
        )
        child_token = self._codec.mint_refresh(child_claims)
        async with pool.acquire() as connection:
            if bound is None:
                live = await sessions.rotate(
                    connection,
                    token_digest=digest,
                    session_id=session_id,
                    now=now,
                    child=_new_token(child_token, child_claims),
                    idle_since=session_policy.idle_since(self._settings, now),
                )
            else:
                # The proof is recorded in the rotation's statement, and a replayed one spends
                # nothing: a request copied whole (token and proof) must not reach the grace
                # window and be handed the owner's child. One round trip, as without DPoP.
                fresh, live = await sessions.rotate_with_proof(
                    connection,
                    token_digest=digest,
                    session_id=session_id,
                    now=now,
                    child=_new_token(child_token, child_claims),
                    jkt=bound.jkt,
                    jti=bound.jti,
                    proof_expires_at=dpop.kept_until(bound),
                    idle_since=session_policy.idle_since(self._settings, now),
                )
                if not fresh:
                    raise InvalidDPoPProof(dpop.USED_BEFORE)
            if live is None:
                return await self._spent(connection, claims, session_id, digest, now)
        telemetry.record(refresh=RefreshOutcome.ROTATED, issued=Grant.REFRESH_TOKEN)
        return self._pair(live, session_id, child_token, child_claims, now)

    async def _spent(
        self,
        connection: Connection,
        claims: RefreshClaims,
        session_id: uuid.UUID,
        digest: bytes,
        now: datetime,
    ) -> TokenPair:
        """A token that could not be used as it stands: its grace child, or `InvalidToken`.

        A token spent moments ago whose child is unused gets that child again (a lost answer,
        or the loser of a race); any other spent token revokes the whole session, in either mode.
        """
        spent = await sessions.find_spent(
            connection,
            token_digest=digest,
            session_id=session_id,
            now=now,
            idle_since=session_policy.idle_since(self._settings, now),
        )
        if spent is None or not spent.session_live or spent.used_at is None:
            # Unknown, or its session is over, or expired/revoked while unused: refused,
            # and nothing is written.
            raise InvalidToken()
        grace = self._grace_child(spent, claims, now)
        if grace is not None:
            child_token, child_claims = grace
            telemetry.record(refresh=RefreshOutcome.GRACE, issued=Grant.REFRESH_TOKEN)
            return self._pair(spent.session, session_id, child_token, child_claims, now)
        # A spent token outside the grace window: it was stolen or replayed.
        await _end_stolen_session(
            connection,
            audit.AuditAction.REUSE_DETECTED,
            session_id=session_id,
            user_id=spent.session.user_id,
            now=now,
        )
        telemetry.record(refresh=RefreshOutcome.REUSE_DETECTED)
        security_log.warning(
            "refresh token reuse detected; session revoked",
            extra={
                "user_id": spent.session.user_id,
                "session_id": session_id,
                "outcome": RefreshOutcome.REUSE_DETECTED,
            },
        )
        raise InvalidToken()

    async def _check_binding(
        self,
        pool: asyncpg.Pool,
        claims: RefreshClaims,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        proof: Proof | None,
        now: datetime,
    ) -> Proof:
        """The proof by a bound refresh token's key, for the caller to record once; refuse the
        token without one (audited), and end the session for another key's (a theft)."""
        if proof is not None and proof.jkt == claims.jkt:
            return proof
        async with pool.acquire() as connection:
            stolen = proof is not None
            if stolen:
                await _end_stolen_session(
                    connection,
                    audit.AuditAction.DPOP_KEY_MISMATCH,
                    session_id=session_id,
                    user_id=user_id,
                    now=now,
                )
            else:
                # A copy without the key: refused and noted, but the owner's session lives on.
                await audit.record(
                    connection,
                    audit.AuditAction.DPOP_PROOF_MISSING,
                    actor=audit.SYSTEM_ACTOR,
                    now=now,
                    user_id=user_id,
                    details={"session_id": str(session_id)},
                )
        security_log.warning(
            "bound refresh token with another key's proof; session revoked"
            if stolen
            else "bound refresh token without its proof",
            extra={"user_id": user_id, "session_id": session_id},
        )
        raise InvalidToken("The token needs a DPoP proof by its key.")

    async def logout(self, pool: asyncpg.Pool, *, refresh_token: str, now: datetime) -> None:
        """Revoke the token's session. Idempotent: a bad or unknown token is ignored."""
        try:
            claims = self._codec.verify_refresh(refresh_token, now)
            user_id, session_id = _parse_uuid(claims.subject), _parse_uuid(claims.session_id)
        except InvalidToken:
            return
        async with pool.acquire() as connection:
            revoked = await sessions.revoke_session_of_token(
                connection,
                token_digest=token_digest(refresh_token),
                session_id=session_id,
                reason=sessions.RevokeReason.LOGOUT,
                now=now,
            )
        if revoked:
            security_log.info(
                "session revoked", extra={"user_id": user_id, "session_id": session_id}
            )

    async def profile(self, pool: asyncpg.Pool, *, access_token: str, now: datetime) -> users.User:
        """The user behind a user access token whose session is still live."""
        return (await self.authenticate(pool, access_token=access_token, now=now)).user

    async def authenticate(
        self, pool: asyncpg.Pool, *, access_token: str, now: datetime
    ) -> SessionUser:
        """The user and session of a user access token whose session is still live.

        Raises `InvalidToken` (or `TokenExpired`) for a bad token, a service's token, a revoked
        or expired session, or a disabled user.
        """
        claims = self._codec.verify_access(access_token, now)
        if claims.session_id is None:
            raise InvalidToken()  # a service's token has no user to show
        user_id, session_id = _parse_uuid(claims.subject), _parse_uuid(claims.session_id)
        telemetry.annotate(user_id=user_id, session_id=session_id)
        async with pool.acquire() as connection:
            user = await users.find_session_user(
                connection,
                user_id=user_id,
                session_id=session_id,
                now=now,
                idle_since=session_policy.idle_since(self._settings, now),
            )
        if user is None:
            raise InvalidToken()
        return SessionUser(user=user, session_id=session_id)

    def _grace_child(
        self, spent: sessions.SpentToken, claims: RefreshClaims, now: datetime
    ) -> tuple[str, RefreshClaims] | None:
        """The same child token again, if the parent was spent moments ago and the child unused."""
        if (
            spent.used_at is None
            or spent.child_digest is None
            or spent.child_issued_at is None
            or spent.child_expires_at is None
            or not spent.child_live
            or now - spent.used_at > timedelta(seconds=self._settings.refresh_reuse_interval)
        ):
            return None
        child_claims = RefreshClaims(
            subject=claims.subject,
            session_id=claims.session_id,
            jti=self._codec.child_jti(claims.jti),
            issued_at=int(spent.child_issued_at.timestamp()),
            expires_at=int(spent.child_expires_at.timestamp()),
            jkt=claims.jkt,
        )
        child_token = self._codec.mint_refresh(child_claims)
        # Signed from the row, so it must hash to the row; if settings changed since, it won't.
        if not secrets.compare_digest(token_digest(child_token), spent.child_digest):
            return None
        return child_token, child_claims

    def _pair(
        self,
        live: sessions.LiveSession,
        session_id: uuid.UUID,
        refresh_token: str,
        refresh_claims: RefreshClaims,
        now: datetime,
    ) -> TokenPair:
        # The token's claims are an edge: ids become text here.
        access_token, access_claims = self._codec.mint_access(
            subject=str(live.user_id),
            session_id=str(session_id),
            email=live.email,
            scope=live.grants.scope,
            roles=live.grants.roles,
            now=now,
            jkt=refresh_claims.jkt,
        )
        moment = int(now.timestamp())
        # The refresh token can outlive neither its own exp nor its session's absolute end.
        refresh_ends = min(refresh_claims.expires_at, int(live.expires_at.timestamp()))
        return TokenPair(
            access_token=access_token,
            expires_in=access_claims.expires_at - moment,
            refresh_token=refresh_token,
            refresh_expires_in=max(0, refresh_ends - moment),
            remember=live.remember,
            token_type="Bearer" if refresh_claims.jkt is None else "DPoP",
        )


async def _end_stolen_session(
    connection: Connection,
    action: audit.AuditAction,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
) -> None:
    """Revoke a session whose refresh token someone else holds, with its audit event. Both
    commit before the request fails: raising inside the transaction would roll them back."""
    async with connection.transaction():
        await sessions.revoke_session(
            connection, session_id=session_id, reason=sessions.RevokeReason.REUSE_DETECTED, now=now
        )
        await audit.record(
            connection,
            action,
            actor=audit.SYSTEM_ACTOR,
            now=now,
            user_id=user_id,
            details={"session_id": str(session_id)},
        )


def _mailbox_or_none(email: str) -> str | None:
    try:
        return normalize_email(email)
    except InvalidInput:
        return None


def _printable(text: str) -> str:
    # A header may carry control characters; Postgres text refuses NUL, and logs want none.
    return "".join(character for character in text if character.isprintable())


def _new_token(token: str, claims: RefreshClaims) -> NewToken:
    return NewToken(
        digest=token_digest(token),
        issued_at=datetime.fromtimestamp(claims.issued_at, tz=UTC),
        expires_at=datetime.fromtimestamp(claims.expires_at, tz=UTC),
    )


def _parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidToken() from None
