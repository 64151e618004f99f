"""Compact JWS and JWT registered claims, checked strictly. Pure: no I/O, no clock.

python-jose signs and checks the MAC; everything it leaves open we close here, because its
defaults are unsafe (SECURITY.md, "Traps in our own libraries"): the header is parsed and the
algorithm pinned by us, each key is bound to one algorithm, and every time claim is checked
against the caller's `now` with integer types only. Tokens must be canonical base64url so that
one token has exactly one spelling, and so one digest. The issuer (`tokens.TokenCodec`) and
resource servers (`verify.TokenVerifier`) both verify through these functions.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeGuard

from jose.exceptions import JOSEError
from jose.utils import base64url_decode, base64url_encode

from tokenrota.errors import InvalidToken, TokenExpired
from tokenrota.keys import BoundKey

HMAC_ALGORITHM = "HS256"
# Far above any token we mint (~400 bytes); checked before any decoding work.
MAX_TOKEN_LENGTH = 4096

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# What json.dumps(..., separators=(",", ":")) writes; made once, as json.dumps builds a new
# encoder on every call that passes an argument.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))

# Given a token's parsed header, the key that must verify it, or InvalidToken. The header names
# at most a key; each key knows its one algorithm, and the header must name exactly that.
KeySelector = Callable[[dict[str, Any]], Any]


def hmac_key_selector(key: Any) -> KeySelector:
    """Select `key` (bound to HS256) for headers naming HS256; any `kid` is ignored."""

    def select(header: dict[str, Any]) -> Any:
        if header.get("alg") != HMAC_ALGORITHM:
            raise InvalidToken()
        return key

    return select


def ring_key_selector(keys: Mapping[str, BoundKey]) -> KeySelector:
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


def sign(payload: dict[str, Any], header: dict[str, str], key: Any) -> str:
    """The compact JWS of `payload` under `header`, signed with `key`."""
    signing_input = b".".join(
        (
            _encoded_header(tuple(header.items())),
            base64url_encode(_COMPACT_JSON.encode(payload).encode()),
        )
    )
    signature: bytes = key.sign(signing_input)
    return b".".join((signing_input, base64url_encode(signature))).decode("ascii")


@functools.lru_cache(maxsize=64)
def _encoded_header(items: tuple[tuple[str, str], ...]) -> bytes:
    # A service signs under a handful of headers (one per token kind and key), each millions of
    # times: encoded once, in the order given, so the bytes are those of json.dumps(header).
    encoded: bytes = base64url_encode(_COMPACT_JSON.encode(dict(items)).encode())
    return encoded


def decode_verified(token: str, select_key: KeySelector, token_type: str) -> dict[str, Any]:
    """Check the form, header and signature of a compact JWS; return its claims, unchecked.

    The algorithm is never taken from the token: `select_key` refuses any header whose `alg`
    is not the one its key is bound to.
    """
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise InvalidToken()
    parts = token.split(".")
    encoded_header, encoded_payload, _ = parts
    try:
        segments = [base64url_decode(part.encode("ascii")) for part in parts]
        # Only the canonical spelling is accepted: no stray trailing bits, one token one digest.
        if any(
            base64url_encode(raw).decode("ascii") != part
            for raw, part in zip(segments, parts, strict=True)
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


def _is_integer(value: object) -> TypeGuard[int]:
    # bool is a subclass of int; `"exp": true` must not pass as 1.
    return isinstance(value, int) and not isinstance(value, bool)
