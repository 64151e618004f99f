"""Minting and verifying the service's JWTs. Pure: no I/O, no clock (callers pass `now`).

Two kinds, each under its own secret and `typ`: access tokens (HS256, or the key ring's
asymmetric key) and refresh tokens (HS256 always). The strict JWS and claim checks that both
kinds go through live in `tokenrota.jws`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jose import jwk
from jose.utils import base64url_encode
from tokenrota.claims import (
    ACCESS_TOKEN_TYPE,
    AccessClaims,
    access_claims_of,
    confirmation_jkt_of,
)
from tokenrota.jws import (
    HMAC_ALGORITHM,
    check_registered_claims,
    decode_verified,
    hmac_key_selector,
    ring_key_selector,
    sign,
)
from tokenrota.keys import KeyRing, load_key_ring

from tokenrota_server.config import Settings
from tokenrota_server.db.sessions import Strength
from tokenrota_server.errors import InvalidToken, TokenExpired

# RFC 8725 §3.11: a type of its own, so a refresh token is never taken for an access token.
REFRESH_TOKEN_TYPE = "refresh+jwt"
REFRESH_CLAIM_TYPE = "refresh"


@dataclass(frozen=True)
class RefreshClaims:
    """A verified refresh token."""

    subject: str
    session_id: str
    jti: str
    issued_at: int
    expires_at: int
    # The DPoP key the session is bound to (`cnf.jkt`): every refresh needs its proof.
    jkt: str | None = None


def new_jti() -> str:
    """A fresh unguessable token id (128 bits)."""
    return secrets.token_urlsafe(16)


def unverified_audience(token: str) -> str | None:
    """The `aud` a token claims, read without checking anything: only to choose the audience
    to verify it for (`TokenCodec.verify_access` then checks the signature over it)."""
    try:
        payload = token.split(".")[1]
        if len(payload) > 8192:
            return None
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    audience = claims.get("aud") if isinstance(claims, dict) else None
    return audience if isinstance(audience, str) else None


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token: what the database keeps instead of the token."""
    return hashlib.sha256(token.encode("ascii")).digest()


class TokenCodec:
    """Mints and verifies access and refresh tokens under their two separate secrets."""

    def __init__(self, settings: Settings) -> None:
        # jwk.construct binds each secret to HS256, so neither can be used under another algorithm.
        self._access_key = jwk.construct(str(settings.access_token_secret), HMAC_ALGORITHM)
        # With an asymmetric key, access tokens are signed and verified with it alone: the
        # HS256 access secret then opens nothing.
        self._key_ring: KeyRing | None = (
            load_key_ring(
                str(settings.access_token_signing_key), settings.access_token_previous_keys
            )
            if settings.access_token_signing_key is not None
            else None
        )
        self._refresh_key = jwk.construct(str(settings.refresh_token_secret), HMAC_ALGORITHM)
        self._select_access_key = (
            ring_key_selector(self._key_ring.verifying)
            if self._key_ring is not None
            else hmac_key_selector(self._access_key)
        )
        self._select_refresh_key = hmac_key_selector(self._refresh_key)
        self._child_key = hashlib.sha256(
            b"child-jti:" + str(settings.refresh_token_secret).encode()
        ).digest()
        self._issuer = settings.token_issuer
        self._audience = settings.token_audience
        self._leeway = settings.jwt_leeway
        self._access_ttl = settings.access_token_ttl
        self._refresh_ttl = settings.refresh_token_ttl

    def __repr__(self) -> str:
        return "TokenCodec(<keys hidden>)"

    # -- minting -----------------------------------------------------------------------------

    def mint_access(
        self,
        *,
        subject: str,
        now: datetime,
        scope: str = "",
        session_id: str | None = None,
        email: str | None = None,
        client_id: str | None = None,
        ttl: int | None = None,
        roles: tuple[str, ...] = (),
        jkt: str | None = None,
        audience: str | None = None,
        actor: dict[str, Any] | None = None,
        strength: Strength | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> tuple[str, AccessClaims]:
        """Sign a new access token; a user token has `session_id`, `email`, `roles` and the
        login's `strength` (`amr`, `acr`, `auth_time`), a client's none of them. With `jkt` it
        is bound to that DPoP key (`cnf`, RFC 9449 §6). `audience` is a resource's URI
        (default: the service itself); `actor` the `act` claim of an exchanged token (RFC 8693
        §4.1)."""
        issued_at = int(now.timestamp())
        audience = audience or self._audience
        claims = AccessClaims(
            subject=subject,
            session_id=session_id,
            jti=new_jti(),
            issued_at=issued_at,
            expires_at=issued_at + (ttl or self._access_ttl),
            scope=scope,
            email=email,
            client_id=client_id,
            roles=roles,
            confirmation_jkt=jkt,
            audience=audience,
            actor=actor,
            amr=strength.amr if strength is not None else (),
            acr=strength.acr if strength is not None else None,
            auth_time=(
                int(strength.auth_time.timestamp())
                if strength is not None and strength.auth_time is not None
                else None
            ),
        )
        payload: dict[str, Any] = {"iss": self._issuer, "aud": audience, "sub": subject}
        if session_id is not None:
            payload["sid"] = session_id
        payload.update(iat=claims.issued_at, exp=claims.expires_at, jti=claims.jti)
        if email is not None:
            payload["email"] = email
        if client_id is not None:
            payload["client_id"] = client_id
        payload["scope"] = scope
        if session_id is not None:
            payload["roles"] = list(roles)
        if jkt is not None:
            payload["cnf"] = {"jkt": jkt}
        if actor is not None:
            payload["act"] = actor
        if claims.acr is not None:
            payload.update(amr=list(claims.amr), acr=claims.acr)
        if claims.auth_time is not None:
            payload["auth_time"] = claims.auth_time
        for name, value in (extra_claims or {}).items():
            # Chosen from app_metadata: never in place of a claim minted above.
            payload.setdefault(name, value)
        if self._key_ring is not None:
            signing = self._key_ring.signing
            header = {"alg": signing.algorithm, "typ": ACCESS_TOKEN_TYPE, "kid": signing.kid}
            return sign(payload, header, signing.key), claims
        return sign(
            payload, {"alg": HMAC_ALGORITHM, "typ": ACCESS_TOKEN_TYPE}, self._access_key
        ), claims

    def mint_refresh(self, claims: RefreshClaims) -> str:
        """Sign a refresh token. Deterministic: the same claims give the same bytes."""
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": claims.subject,
            "sid": claims.session_id,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
            "typ": REFRESH_CLAIM_TYPE,
        }
        if claims.jkt is not None:
            payload["cnf"] = {"jkt": claims.jkt}
        return sign(payload, {"alg": HMAC_ALGORITHM, "typ": REFRESH_TOKEN_TYPE}, self._refresh_key)

    def new_refresh_claims(
        self,
        *,
        subject: str,
        session_id: str,
        now: datetime,
        jti: str | None = None,
        jkt: str | None = None,
    ) -> RefreshClaims:
        """Claims of a refresh token issued at `now`, living the refresh lifetime."""
        issued_at = int(now.timestamp())
        return RefreshClaims(
            subject=subject,
            session_id=session_id,
            jti=jti or new_jti(),
            issued_at=issued_at,
            expires_at=issued_at + self._refresh_ttl,
            jkt=jkt,
        )

    def child_jti(self, parent_jti: str) -> str:
        """The jti of the token that replaces `parent_jti`.

        Derived, not random, so that the grace window can sign the same child again, byte for
        byte, from the child's row, without the database ever holding a usable token.
        """
        mac = hmac.new(self._child_key, parent_jti.encode(), hashlib.sha256).digest()
        return str(base64url_encode(mac[:16]).decode("ascii"))

    def jwks(self) -> dict[str, Any] | None:
        """The JWK set of the public keys that verify access tokens; None under HS256."""
        return self._key_ring.jwks() if self._key_ring is not None else None

    # -- verification ------------------------------------------------------------------------

    @property
    def audience(self) -> str:
        """The service's own audience: the `aud` of tokens minted for no resource."""
        return self._audience

    def verify_access(self, token: str, now: datetime, audience: str | None = None) -> AccessClaims:
        """Check an access token for `audience` (default: the service itself, so a token for a
        resource opens none of the service's own routes); raise `TokenExpired` or
        `InvalidToken`."""
        claims = decode_verified(token, self._select_access_key, ACCESS_TOKEN_TYPE)
        self._check_registered_claims(
            claims, now, lifetime=self._access_ttl, audience=audience or self._audience
        )
        return access_claims_of(claims)

    def verify_refresh(self, token: str, now: datetime) -> RefreshClaims:
        """Check a refresh token's signature and claims (not its row); raise `InvalidToken`."""
        claims = decode_verified(token, self._select_refresh_key, REFRESH_TOKEN_TYPE)
        try:
            self._check_registered_claims(
                claims, now, lifetime=self._refresh_ttl, audience=self._audience
            )
        except TokenExpired:
            # /refresh answers every refusal alike: invalid_token.
            raise InvalidToken() from None
        if claims.get("typ") != REFRESH_CLAIM_TYPE or not isinstance(claims.get("sid"), str):
            raise InvalidToken()
        return RefreshClaims(
            subject=claims["sub"],
            session_id=claims["sid"],
            jti=claims["jti"],
            issued_at=claims["iat"],
            expires_at=claims["exp"],
            jkt=confirmation_jkt_of(claims),
        )

    def _check_registered_claims(
        self, claims: dict[str, Any], now: datetime, *, lifetime: int, audience: str
    ) -> None:
        check_registered_claims(
            claims,
            now=now,
            issuer=self._issuer,
            audience=audience,
            leeway=self._leeway,
            lifetime=lifetime,
        )
