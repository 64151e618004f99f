"""OAuth 2.0 use cases for the services that call us: clients, tokens, introspection, revocation.

Who owns a token, and so who may revoke it (RFC 7009 §2.1):
- a client's access token belongs to that client: only it may revoke it; another client's
  request is answered 200 like any other, and changes nothing;
- a user's tokens (from /login) belong to the user's session, not to any client. Whoever holds
  one can already end that session (/logout, or by replaying a spent refresh token), so any
  authenticated client presenting one may revoke its session; nothing more is gained by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from tokenrota.claims import AccessClaims
from tokenrota.clock import Monotonic, monotonic

from tokenrota_server import session_policy, telemetry
from tokenrota_server.auth import Authenticator
from tokenrota_server.config import Settings
from tokenrota_server.db import oauth_clients, sessions, throttle, users
from tokenrota_server.db.oauth_clients import Client
from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import (
    InvalidClient,
    InvalidScope,
    InvalidToken,
    TooManyAttempts,
)
from tokenrota_server.outcomes import Grant
from tokenrota_server.passwords import CheckReservation, Passwords, reserve_then_count
from tokenrota_server.tokens import RefreshClaims, TokenCodec, token_digest

security_log = logging.getLogger("tokenrota.security")

INACTIVE: dict[str, Any] = {"active": False}
# How long a successful client authentication is remembered, and how many are, per instance.
VERIFIED_CLIENT_TTL = 60.0
VERIFIED_CLIENT_LIMIT = 10_000


@dataclass(frozen=True, repr=False)
class ClientSecret:
    """Credentials a client presented; repr hides the secret."""

    client_id: str
    secret: str


class AuthorizationServer:
    """The OAuth endpoints' work, with dependencies passed in."""

    def __init__(
        self,
        settings: Settings,
        codec: TokenCodec,
        passwords: Passwords,
        *,
        clock: Monotonic = monotonic,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._passwords = passwords
        self._clock = clock
        # Client secrets are 256 random bits, so argon2's slowness guards nothing guessable,
        # yet it made each introspection cost ~230 ms. A success is remembered briefly, keyed
        # by the stored hash (a rotated secret misses) and a keyed digest of the secret (the
        # secret itself is not kept). The row is still read every time: disabling is immediate.
        self._verified: dict[tuple[str, str, bytes], float] = {}
        self._verified_key = secrets.token_bytes(32)
        # The verification under way for each such key: when the remembered success expires,
        # a resource server's burst of introspections with one secret shares one argon2 run
        # instead of queueing one each (32 at once took seconds and the argon2 queue's bound).
        self._verifying: dict[tuple[str, str, bytes], asyncio.Future[bool]] = {}

    # -- client authentication ----------------------------------------------------------------

    async def authenticate(
        self,
        pool: asyncpg.Pool,
        presented: ClientSecret,
        *,
        ip: str | None = None,
        now: datetime | None = None,
    ) -> Client:
        """The client whose secret this is; raise `InvalidClient`, `TooManyAttempts` or
        `Overloaded` (503, before the attempt is counted).

        An unknown client, a wrong secret and a disabled client all cost one argon2
        verification (a dummy hash for the unknown) and end in the same error. With the
        caller's address `ip` (and `now`), each verification counts against that address in the
        login throttle, so that a flood of bad credentials is refused before argon2 runs.
        """
        async with pool.acquire() as connection:
            found = await oauth_clients.find_client(connection, presented.client_id, now)
        remembered = (
            presented.client_id,
            found.secret_hash if found else "",
            hmac.new(self._verified_key, presented.secret.encode(), hashlib.sha256).digest(),
        )
        recently_verified = self._verified.get(remembered, 0.0) > self._clock()
        if found is not None and found.previous_secret_hash is not None:
            previous = (remembered[0], found.previous_secret_hash, remembered[2])
            recently_verified |= self._verified.get(previous, 0.0) > self._clock()
        if found is not None and not found.client.disabled and recently_verified:
            telemetry.annotate(client_id=found.client.client_id)
            return found.client
        with contextlib.ExitStack() as held:
            reservation = None
            if ip is not None and now is not None:
                async with pool.acquire() as connection:
                    # A request that will wait for a run already under way with the same
                    # secret takes no place (it adds no argon2 work), so one resource server's
                    # burst is not refused for it.
                    reservation, retry_after = await reserve_then_count(
                        held,
                        lambda: (
                            None
                            if remembered in self._verifying
                            else self._passwords.reserve_check()
                        ),
                        lambda: throttle.count_address_attempt(
                            connection, self._settings, ip=ip, now=now
                        ),
                        refused=lambda retry_after: retry_after is not None,
                    )
                if retry_after is not None:
                    security_log.warning("client authentication throttled", extra={"ip": ip})
                    raise TooManyAttempts(retry_after)
            matched = await self._verify_once(
                remembered, found.secret_hash if found else None, presented.secret, reservation
            )
        if not matched and found is not None and found.previous_secret_hash is not None:
            # Within a rotation's grace period the old secret still works: one more argon2
            # run, only for a wrong current secret of a client with a live previous one.
            matched = await self._verify_once(
                (remembered[0], found.previous_secret_hash, remembered[2]),
                found.previous_secret_hash,
                presented.secret,
                None,
            )
        if found is None or not matched or found.client.disabled:
            security_log.info(
                "client authentication failed",
                extra={"client_id": found.client.client_id if found else None},
            )
            raise InvalidClient()
        if ip is not None and now is not None:
            # Only failures should add up: a client that authenticates takes its attempt back.
            async with pool.acquire() as connection:
                await throttle.forgive_address_attempt(connection, self._settings, ip=ip)
        telemetry.annotate(client_id=found.client.client_id)
        return found.client

    async def _verify_once(
        self,
        key: tuple[str, str, bytes],
        secret_hash: str | None,
        secret: str,
        reservation: CheckReservation | None,
    ) -> bool:
        """Whether `secret` matches `secret_hash`, in one argon2 run per key at a time: a call
        with the same key while one is under way waits for that one's answer (or error).

        A call that starts the run hands its `reservation` over to it (the run outlives a
        caller that goes away); one that waits for another's leaves its own to its caller.
        Without one (the run it meant to wait for is over), the run takes its own place and
        may raise `Overloaded`.
        """
        pending = self._verifying.get(key)
        if pending is None:
            handed = reservation.hand_over() if reservation is not None else None
            pending = asyncio.ensure_future(
                self._verify_and_remember(key, secret_hash, secret, handed)
            )
            self._verifying[key] = pending
            pending.add_done_callback(lambda _: self._verifying.pop(key, None))
        # Shielded: a caller that goes away does not cancel the run the others wait for.
        return await asyncio.shield(pending)

    async def _verify_and_remember(
        self,
        key: tuple[str, str, bytes],
        secret_hash: str | None,
        secret: str,
        reservation: CheckReservation | None,
    ) -> bool:
        # The run releases the place it was handed; without one, `verify` takes its own.
        with reservation if reservation is not None else contextlib.nullcontext():
            matched = await self._passwords.verify(secret_hash, secret, reservation=reservation)
        if matched:
            # Remembered before the run is over, so no caller finds neither the run nor this.
            if len(self._verified) >= VERIFIED_CLIENT_LIMIT:
                self._verified.clear()
            self._verified[key] = self._clock() + VERIFIED_CLIENT_TTL
        return matched

    # -- grants -------------------------------------------------------------------------------

    def client_credentials(
        self, client: Client, requested_scope: str | None, now: datetime, jkt: str | None = None
    ) -> dict[str, Any]:
        """An access token for the client itself (RFC 6749 §4.4); no refresh token. Bound to
        the DPoP key `jkt` when the request carried a proof (`token_type` DPoP)."""
        if requested_scope is None:
            scopes = client.scopes
        else:
            scopes = oauth_clients.parse_scope(requested_scope)
            if not set(scopes) <= set(client.scopes):
                raise InvalidScope()
        scope = " ".join(scopes)
        token, claims = self._codec.mint_access(
            subject=client.client_id, client_id=client.client_id, scope=scope, now=now, jkt=jkt
        )
        telemetry.record(issued=Grant.CLIENT_CREDENTIALS)
        return {
            "access_token": token,
            "token_type": "Bearer" if jkt is None else "DPoP",
            "expires_in": claims.expires_at - int(now.timestamp()),
            "scope": scope,
        }

    # -- introspection and revocation ---------------------------------------------------------

    async def introspect(self, pool: asyncpg.Pool, token: str, now: datetime) -> dict[str, Any]:
        """RFC 7662: what an active token says; exactly `{"active": false}` for any other."""
        access = self._access_claims(token, now)
        if access is not None:
            async with pool.acquire() as connection:
                live = await self._access_token_live(connection, access, now)
            return self._describe_access(access) if live else INACTIVE
        refresh = self._refresh_claims(token, now)
        if refresh is not None:
            async with pool.acquire() as connection:
                spent = await sessions.find_spent(
                    connection,
                    token_digest=token_digest(token),
                    session_id=uuid.UUID(refresh.session_id),
                    now=now,
                    idle_since=session_policy.idle_since(self._settings, now),
                )
            live = (
                spent is not None
                and spent.token_live
                and spent.used_at is None
                and spent.session_live
                and spent.session.user_id == uuid.UUID(refresh.subject)
            )
            return self._describe_refresh(refresh) if live else INACTIVE
        return INACTIVE

    async def revoke(
        self, pool: asyncpg.Pool, auth: Authenticator, client: Client, token: str, now: datetime
    ) -> None:
        """RFC 7009: revoke what the token stands for, if `client` may; silent otherwise."""
        access = self._access_claims(token, now)
        if access is not None and access.client_id is not None:
            if access.client_id != client.client_id:
                security_log.warning(
                    "revocation of another client's token refused",
                    extra={"client_id": client.client_id, "token_client_id": access.client_id},
                )
                return
            async with pool.acquire() as connection:
                await oauth_clients.revoke_access_token(
                    connection,
                    jti=access.jti,
                    client_id=client.client_id,
                    expires_at=datetime.fromtimestamp(access.expires_at, tz=UTC),
                    now=now,
                )
            security_log.info("client access token revoked", extra={"client_id": client.client_id})
            return
        if access is not None and access.session_id is not None:
            async with pool.acquire() as connection:
                revoked = await sessions.revoke_session(
                    connection,
                    session_id=uuid.UUID(access.session_id),
                    reason=sessions.RevokeReason.LOGOUT,
                    now=now,
                )
            if revoked:
                security_log.info(
                    "session revoked by client",
                    extra={"client_id": client.client_id, "session_id": access.session_id},
                )
            return
        # A refresh token (or garbage, which logout ignores): the same as /logout.
        await auth.logout(pool, refresh_token=token, now=now)

    # -- helpers ------------------------------------------------------------------------------

    def _access_claims(self, token: str, now: datetime) -> AccessClaims | None:
        try:
            claims = self._codec.verify_access(token, now)
        except InvalidToken:
            return None
        if claims.session_id is not None and not _is_uuid(claims.session_id, claims.subject):
            return None
        return claims

    def _refresh_claims(self, token: str, now: datetime) -> RefreshClaims | None:
        try:
            claims = self._codec.verify_refresh(token, now)
        except InvalidToken:
            return None
        return claims if _is_uuid(claims.session_id, claims.subject) else None

    async def _access_token_live(
        self, connection: Connection, claims: AccessClaims, now: datetime
    ) -> bool:
        if claims.client_id is not None:
            return await oauth_clients.is_client_token_live(
                connection, client_id=claims.client_id, jti=claims.jti
            )
        assert claims.session_id is not None
        user = await users.find_session_user(
            connection,
            user_id=uuid.UUID(claims.subject),
            session_id=uuid.UUID(claims.session_id),
            now=now,
            idle_since=session_policy.idle_since(self._settings, now),
        )
        return user is not None

    def _describe_access(self, claims: AccessClaims) -> dict[str, Any]:
        # RFC 9449 §6.2: a bound token is a DPoP token, and its key is named for the asker.
        kind = "Bearer" if claims.confirmation_jkt is None else "DPoP"
        body: dict[str, Any] = {"active": True, "token_type": kind, "scope": claims.scope}
        if claims.client_id is not None:
            body["client_id"] = claims.client_id
        body.update(self._common(claims.subject, claims.issued_at, claims.expires_at, claims.jti))
        if claims.session_id is not None:
            body["sid"] = claims.session_id
        if claims.confirmation_jkt is not None:
            body["cnf"] = {"jkt": claims.confirmation_jkt}
        return body

    def _describe_refresh(self, claims: RefreshClaims) -> dict[str, Any]:
        body: dict[str, Any] = {"active": True, "token_type": "refresh_token", "scope": ""}
        body.update(self._common(claims.subject, claims.issued_at, claims.expires_at, claims.jti))
        body["sid"] = claims.session_id
        return body

    def _common(self, subject: str, issued_at: int, expires_at: int, jti: str) -> dict[str, Any]:
        return {
            "sub": subject,
            "iat": issued_at,
            "exp": expires_at,
            "iss": self._settings.token_issuer,
            "aud": self._settings.token_audience,
            "jti": jti,
        }


def _is_uuid(*values: str) -> bool:
    try:
        for value in values:
            uuid.UUID(value)
    except ValueError:
        return False
    return True
