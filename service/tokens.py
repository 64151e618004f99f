"""Minting and verifying the service's JWTs. Pure: no I/O, no clock (callers pass `now`).

python-jose signs and checks the MAC; everything it leaves open we close here, because its
defaults are unsafe (SECURITY.md, "Traps in our own libraries"): the header is parsed and the
algorithm pinned by us, each key is bound to one algorithm, and every time claim is checked
against the caller's `now` with integer types only. Tokens must be canonical base64url so that
one token has exactly one spelling, and so one digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from jose import jwk
from jose.exceptions import JOSEError
from jose.utils import base64url_decode, base64url_encode

from service.config import Settings
from service.errors import InvalidToken, TokenExpired
from service.keys import KeyRing, load_key_ring

ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1
# RFC 8725 §3.11: a type of its own, so a refresh token is never taken for an access token.
REFRESH_TOKEN_TYPE = "refresh+jwt"
REFRESH_CLAIM_TYPE = "refresh"
# Far above any token we mint (~400 bytes); checked before any decoding work.
MAX_TOKEN_LENGTH = 4096

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# Given a token's parsed header, the key that must verify it, or InvalidToken. The header names
# at most a key; each key knows its one algorithm, and the header must name exactly that.
KeySelector = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class AccessClaims:
    """A verified access token. `session_id` and `email` are None for client tokens."""

    subject: str
    session_id: str | None
    jti: str
    issued_at: int
    expires_at: int
    scope: str
    email: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class RefreshClaims:
    """A verified refresh token."""

    subject: str
    session_id: str
    jti: str
    issued_at: int
    expires_at: int


def new_jti() -> str:
    """A fresh unguessable token id (128 bits)."""
    return secrets.token_urlsafe(16)


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token: what the database keeps instead of the token."""
    return hashlib.sha256(token.encode("ascii")).digest()


class TokenCodec:
    """Mints and verifies access and refresh tokens under their two separate secrets."""

    def __init__(self, settings: Settings) -> None:
        # jwk.construct binds each secret to HS256, so neither can be used under another algorithm.
        self._access_key = jwk.construct(str(settings.access_token_secret), ALGORITHM)
        # With an asymmetric key, access tokens are signed and verified with it alone: the
        # HS256 access secret then opens nothing.
        self._key_ring: KeyRing | None = (
            load_key_ring(
                str(settings.access_token_signing_key), settings.access_token_previous_keys
            )
            if settings.access_token_signing_key is not None
            else None
        )
        self._refresh_key = jwk.construct(str(settings.refresh_token_secret), ALGORITHM)
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
    ) -> tuple[str, AccessClaims]:
        """Sign a new access token; a user token has `session_id` and `email`, a client's not."""
        issued_at = int(now.timestamp())
        claims = AccessClaims(
            subject=subject,
            session_id=session_id,
            jti=new_jti(),
            issued_at=issued_at,
            expires_at=issued_at + (ttl or self._access_ttl),
            scope=scope,
            email=email,
            client_id=client_id,
        )
        payload: dict[str, Any] = {"iss": self._issuer, "aud": self._audience, "sub": subject}
        if session_id is not None:
            payload["sid"] = session_id
        payload.update(iat=claims.issued_at, exp=claims.expires_at, jti=claims.jti)
        if email is not None:
            payload["email"] = email
        if client_id is not None:
            payload["client_id"] = client_id
        payload["scope"] = scope
        if self._key_ring is not None:
            signing = self._key_ring.signing
            header = {"alg": signing.algorithm, "typ": ACCESS_TOKEN_TYPE, "kid": signing.kid}
            return _sign(payload, header, signing.key), claims
        return _sign(
            payload, {"alg": ALGORITHM, "typ": ACCESS_TOKEN_TYPE}, self._access_key
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
        return _sign(payload, {"alg": ALGORITHM, "typ": REFRESH_TOKEN_TYPE}, self._refresh_key)

    def new_refresh_claims(
        self, *, subject: str, session_id: str, now: datetime, jti: str | None = None
    ) -> RefreshClaims:
        """Claims of a refresh token issued at `now`, living the refresh lifetime."""
        issued_at = int(now.timestamp())
        return RefreshClaims(
            subject=subject,
            session_id=session_id,
            jti=jti or new_jti(),
            issued_at=issued_at,
            expires_at=issued_at + self._refresh_ttl,
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

    def _access_key_for(self, header: dict[str, Any]) -> Any:
        if self._key_ring is None:
            return hmac_key_selector(self._access_key)(header)
        return ring_key_selector(self._key_ring.verifying)(header)

    # -- verification ------------------------------------------------------------------------

    def verify_access(self, token: str, now: datetime) -> AccessClaims:
        """Check an access token; raise `TokenExpired` or `InvalidToken`."""
        claims = decode_verified(token, self._access_key_for, ACCESS_TOKEN_TYPE)
        check_registered_claims(
            claims,
            now=now,
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
            lifetime=self._access_ttl,
        )
        return access_claims_of(claims)

    def verify_refresh(self, token: str, now: datetime) -> RefreshClaims:
        """Check a refresh token's signature and claims (not its row); raise `InvalidToken`."""
        claims = decode_verified(token, hmac_key_selector(self._refresh_key), REFRESH_TOKEN_TYPE)
        try:
            check_registered_claims(
                claims,
                now=now,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                lifetime=self._refresh_ttl,
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
        )


def check_registered_claims(
    claims: dict[str, Any],
    *,
    now: datetime,
    issuer: str,
    audience: str,
    leeway: int,
    lifetime: int,
) -> None:
    """Check iss, aud, sub, jti and the times against `now`; raise `TokenExpired`/`InvalidToken`."""
    if claims.get("iss") != issuer or claims.get("aud") != audience:
        raise InvalidToken()
    for name in ("sub", "jti"):
        value = claims.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidToken()
    issued_at, expires_at, not_before = claims.get("iat"), claims.get("exp"), claims.get("nbf")
    if not _is_integer(issued_at) or not _is_integer(expires_at):
        raise InvalidToken()
    moment = int(now.timestamp())
    if issued_at > moment + leeway:
        raise InvalidToken()
    if not_before is not None and (not _is_integer(not_before) or not_before > moment + leeway):
        raise InvalidToken()
    # A token may not live longer than its kind does, whatever its exp says.
    if expires_at <= issued_at or expires_at - issued_at > lifetime:
        raise InvalidToken()
    if moment >= expires_at + leeway:
        raise TokenExpired()


def access_claims_of(claims: dict[str, Any]) -> AccessClaims:
    """The access claims of checked registered claims; raise `InvalidToken` if ill-formed."""
    if "typ" in claims:
        raise InvalidToken()
    scope = claims.get("scope")
    session_id, email, client_id = claims.get("sid"), claims.get("email"), claims.get("client_id")
    if not isinstance(scope, str):
        raise InvalidToken()
    # A person's token names its session and email; a service's names its client.
    is_user_token = isinstance(session_id, str) and isinstance(email, str) and client_id is None
    is_client_token = isinstance(client_id, str) and session_id is None and email is None
    if not (is_user_token or is_client_token):
        raise InvalidToken()
    return AccessClaims(
        subject=claims["sub"],
        session_id=session_id,
        jti=claims["jti"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        scope=scope,
        email=email,
        client_id=client_id,
    )


def hmac_key_selector(key: Any) -> KeySelector:
    """Select `key` (bound to HS256) for headers naming HS256; any `kid` is ignored."""

    def select(header: dict[str, Any]) -> Any:
        if header.get("alg") != ALGORITHM:
            raise InvalidToken()
        return key

    return select


def ring_key_selector(keys: Any) -> KeySelector:
    """Select from `keys` (kid -> `BoundKey`) by the header's kid, whose algorithm must match.

    An HS256 header naming an RSA key's kid is refused here, before any MAC is computed.
    """

    def select(header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        bound = keys.get(kid) if isinstance(kid, str) else None
        if bound is None or header.get("alg") != bound.algorithm:
            raise InvalidToken()
        return bound.key

    return select


def _is_integer(value: object) -> TypeGuard[int]:
    # bool is a subclass of int; `"exp": true` must not pass as 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _sign(payload: dict[str, Any], header: dict[str, str], key: Any) -> str:
    signing_input = b".".join(
        (
            base64url_encode(json.dumps(header, separators=(",", ":")).encode()),
            base64url_encode(json.dumps(payload, separators=(",", ":")).encode()),
        )
    )
    signature: bytes = key.sign(signing_input)
    return b".".join((signing_input, base64url_encode(signature))).decode("ascii")


def decode_verified(token: str, select_key: KeySelector, token_type: str) -> dict[str, Any]:
    """Check the form, header and signature of a compact JWS; return its claims, unchecked.

    The algorithm is never taken from the token: `select_key` refuses any header whose `alg`
    is not the one its key is bound to.
    """
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise InvalidToken()
    encoded_header, encoded_payload, encoded_signature = token.split(".")
    try:
        segments = [base64url_decode(part.encode("ascii")) for part in token.split(".")]
        # Only the canonical spelling is accepted: no stray trailing bits, one token one digest.
        if any(
            base64url_encode(raw).decode("ascii") != part
            for raw, part in zip(
                segments, (encoded_header, encoded_payload, encoded_signature), strict=True
            )
        ):
            raise InvalidToken()
        # RFC 7515 §4 and RFC 7519 §7.2: UTF-8 JSON only. json.loads(bytes) would also guess
        # UTF-16/32 and skip a BOM, so one token could have several readings.
        header = json.loads(segments[0].decode("utf-8"))
        if not isinstance(header, dict):
            raise InvalidToken()
        if header.get("typ") != token_type:
            raise InvalidToken()
        # Pinned by the key, not taken from the token: `none`, HS384 and the rest all fail.
        key = select_key(header)
        signing_input = f"{encoded_header}.{encoded_payload}".encode("ascii")
        if not key.verify(signing_input, segments[2]):
            raise InvalidToken()
        claims = json.loads(segments[1].decode("utf-8"))
    except (JOSEError, TypeError, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidToken() from None
    if not isinstance(claims, dict):
        raise InvalidToken()
    return claims
