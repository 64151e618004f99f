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
from tokenrota.claims import MAX_ACTOR_DEPTH, AccessClaims
from tokenrota.clock import Monotonic, monotonic

from tokenrota_server import session_policy, telemetry
from tokenrota_server.auth import Authenticator
from tokenrota_server.config import Settings
from tokenrota_server.db import audit, oauth_clients, sessions, throttle, users
from tokenrota_server.db import resources as resources_table
from tokenrota_server.db.audit import AuditAction
from tokenrota_server.db.oauth_clients import Client
from tokenrota_server.db.pool import Connection
from tokenrota_server.db.resources import ClientGrant, GrantKind
from tokenrota_server.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    TooManyAttempts,
)
from tokenrota_server.outcomes import Grant
from tokenrota_server.passwords import CheckReservation, Passwords, reserve_then_count
from tokenrota_server.tokens import (
    RefreshClaims,
    TokenCodec,
    token_digest,
    unverified_audience,
)

security_log = logging.getLogger("tokenrota.security")

INACTIVE: dict[str, Any] = {"active": False}
# RFC 8693 §3: the one token type exchanged, both ways.
ACCESS_TOKEN_TYPE_URN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
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

    async def resource_grant(
        self, pool: asyncpg.Pool, client: Client, resource: str | None, kind: GrantKind
    ) -> ClientGrant | None:
        """The client's grant of `kind` toward the `resource` it asked for (None when it asked
        for none, or for the service itself); raise `InvalidTarget` for a malformed, unknown or
        ungranted resource."""
        if resource is None or resource == self._codec.audience:
            return None
        uri = resources_table.check_uri(resource)
        async with pool.acquire() as connection:
            found = await resources_table.find_grant(
                connection, client_id=client.client_id, uri=uri, kind=kind
            )
        if found is None:
            raise InvalidTarget()
        return found

    def client_credentials(
        self,
        client: Client,
        requested_scope: str | None,
        now: datetime,
        jkt: str | None = None,
        grant: ClientGrant | None = None,
    ) -> dict[str, Any]:
        """An access token for the client itself (RFC 6749 §4.4); no refresh token. Bound to
        the DPoP key `jkt` when the request carried a proof (`token_type` DPoP). With a
        resource `grant` it is for that resource: the granted scopes the resource still
        defines, and its lifetime if shorter."""
        allowed = (
            client.scopes
            if grant is None
            else tuple(scope for scope in grant.scopes if scope in grant.resource.scopes)
        )
        if requested_scope is None:
            scopes = allowed
        else:
            scopes = oauth_clients.parse_scope(requested_scope)
            if not set(scopes) <= set(allowed):
                raise InvalidScope()
        scope = " ".join(scopes)
        token, claims = self._codec.mint_access(
            subject=client.client_id,
            client_id=client.client_id,
            scope=scope,
            now=now,
            jkt=jkt,
            audience=grant.resource.uri if grant else None,
            ttl=grant.resource.access_token_ttl if grant else None,
        )
        telemetry.record(issued=Grant.CLIENT_CREDENTIALS)
        return {
            "access_token": token,
            "token_type": "Bearer" if jkt is None else "DPoP",
            "expires_in": claims.expires_at - int(now.timestamp()),
            "scope": scope,
        }

    async def exchange(
        self,
        pool: asyncpg.Pool,
        client: Client,
        *,
        subject_token: str,
        resource: str,
        requested_scope: str | None,
        now: datetime,
        jkt: str | None = None,
    ) -> dict[str, Any]:
        """RFC 8693: a token for the downstream `resource`, for the user of `subject_token`,
        acted on by `client`. Raise `InvalidTarget`, `InvalidGrant` or `InvalidScope`.

        The subject token must be a user's live access token for a resource the client serves
        (its `serves` grant): a token for another audience, a client's, a refresh token, an
        expired one or one of a revoked session is `InvalidGrant`. The client needs an
        `exchange` grant toward `resource`. The new token narrows everything: scopes (the
        subject's, the resource's and the grant's), lifetime (never past the subject's `exp`),
        and keeps `sub` and `sid`, so ending the session ends it too (the feed names `sid`).
        """
        uri = resources_table.check_uri(resource)
        audience = unverified_audience(subject_token)
        async with pool.acquire() as connection:
            served = (
                await resources_table.find_grant(
                    connection, client_id=client.client_id, uri=audience, kind=GrantKind.SERVES
                )
                if audience is not None
                else None
            )
            if served is None:
                raise InvalidGrant("The subject token is not for a resource this client serves.")
            try:
                subject = self._codec.verify_access(subject_token, now, audience=audience)
            except InvalidToken:  # TokenExpired included
                raise InvalidGrant() from None
            if subject.session_id is None or not _is_uuid(subject.subject, subject.session_id):
                raise InvalidGrant("The subject token is not a user's.")
            downstream = await resources_table.find_grant(
                connection, client_id=client.client_id, uri=uri, kind=GrantKind.EXCHANGE
            )
            if downstream is None:
                raise InvalidTarget()
            if not await self._access_token_live(connection, subject, now):
                raise InvalidGrant()
            allowed = (
                set(subject.scope.split())
                & set(downstream.resource.scopes)
                & set(downstream.scopes)
            )
            scopes = (
                oauth_clients.parse_scope(requested_scope)
                if requested_scope is not None
                else tuple(sorted(allowed))
            )
            if not set(scopes) <= allowed:
                raise InvalidScope()
            # Never past the subject token's own end, nor longer than the resource allows.
            left = subject.expires_at - int(now.timestamp())
            ttl = min(downstream.resource.access_token_ttl or self._settings.access_token_ttl, left)
            actor: dict[str, Any] = {"sub": client.client_id}
            if subject.actor is not None:
                actor["act"] = subject.actor
            if ttl <= 0 or _actor_depth(actor) > MAX_ACTOR_DEPTH:
                raise InvalidGrant()
            token, claims = self._codec.mint_access(
                subject=subject.subject,
                session_id=subject.session_id,
                email=subject.email,
                roles=subject.roles,
                scope=" ".join(scopes),
                now=now,
                jkt=jkt,
                audience=uri,
                ttl=ttl,
                actor=actor,
            )
            await audit.record(
                connection,
                AuditAction.TOKEN_EXCHANGED,
                actor=audit.client_actor(client.client_id),
                now=now,
                user_id=uuid.UUID(subject.subject),
                details={
                    "session_id": subject.session_id,
                    "subject_audience": audience,
                    "resource": uri,
                    "scope": claims.scope,
                    "jti": claims.jti,
                },
            )
        telemetry.record(issued=Grant.TOKEN_EXCHANGE)
        security_log.info(
            "token exchanged",
            extra={"client_id": client.client_id, "session_id": subject.session_id},
        )
        return {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE_URN,
            "token_type": "Bearer" if jkt is None else "DPoP",
            "expires_in": claims.expires_at - int(now.timestamp()),
            "scope": claims.scope,
        }

    # -- introspection and revocation ---------------------------------------------------------

    async def introspect(self, pool: asyncpg.Pool, token: str, now: datetime) -> dict[str, Any]:
        """RFC 7662: what an active token says; exactly `{"active": false}` for any other."""
        access = await self._access_claims(pool, token, now)
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
        access = await self._access_claims(pool, token, now)
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

    async def _access_claims(
        self, pool: asyncpg.Pool, token: str, now: datetime
    ) -> AccessClaims | None:
        """The claims of a valid access token for the service or a registered resource."""
        audience = unverified_audience(token)
        if audience is None:
            return None
        if audience != self._codec.audience:
            async with pool.acquire() as connection:
                if await resources_table.find_by_uri(connection, audience) is None:
                    return None
        try:
            claims = self._codec.verify_access(token, now, audience=audience)
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
        body["aud"] = claims.audience
        if claims.actor is not None:
            body["act"] = claims.actor
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


def _actor_depth(actor: dict[str, Any] | None) -> int:
    depth = 0
    while isinstance(actor, dict):
        depth, actor = depth + 1, actor.get("act")
    return depth


def _is_uuid(*values: str) -> bool:
    try:
        for value in values:
            uuid.UUID(value)
    except ValueError:
        return False
    return True
