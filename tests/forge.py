"""Hand-built JWTs for attack tests: any header, any claims, any key, any encoding.

Nothing here goes through the service's own minting code, so a bug there cannot hide a bug in
verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from tokenrota_server.config import Settings

# A change to this value removes the claim (None stays, as JSON null).
REMOVE: Any = object()

HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64(data: bytes) -> str:
    """Canonical base64url without padding, as JWS wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def mac(key: str | bytes, signing_input: str, alg: str = "HS256") -> bytes:
    key_bytes = key.encode() if isinstance(key, str) else key
    return hmac.new(key_bytes, signing_input.encode("ascii"), HASHES[alg]).digest()


def token(
    claims: Any,
    key: str | bytes,
    *,
    header: Any = None,
    alg: str = "HS256",
    raw_header: bytes | None = None,
    raw_claims: bytes | None = None,
) -> str:
    """A compact JWS of `header` and `claims`, MACed with `key` under `alg`.

    `raw_header` / `raw_claims` replace the JSON encoding with exact bytes.
    """
    header = {"alg": "HS256", "typ": "at+jwt"} if header is None else header
    signing_input = (
        f"{b64(raw_header if raw_header is not None else encode_json(header))}."
        f"{b64(raw_claims if raw_claims is not None else encode_json(claims))}"
    )
    return f"{signing_input}.{b64(mac(key, signing_input, alg))}"


def access_claims(settings: Settings, now: int, **changes: Any) -> dict[str, Any]:
    """Claims of a valid user access token issued at `now`; a change to REMOVE drops a claim."""
    claims: dict[str, Any] = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": now,
        "exp": now + settings.access_token_ttl,
        "jti": uuid.uuid4().hex,
        "email": "someone@example.com",
        "scope": "",
    }
    return apply_changes(claims, changes)


def refresh_claims(settings: Settings, now: int, **changes: Any) -> dict[str, Any]:
    """Claims of a valid refresh token issued at `now`; a change to REMOVE drops a claim."""
    claims: dict[str, Any] = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": now,
        "exp": now + settings.refresh_token_ttl,
        "jti": uuid.uuid4().hex,
        "typ": "refresh",
    }
    return apply_changes(claims, changes)


ACCESS_HEADER = {"alg": "HS256", "typ": "at+jwt"}
REFRESH_HEADER = {"alg": "HS256", "typ": "refresh+jwt"}


def access_secret(settings: Settings) -> str:
    return str(settings.access_token_secret)


def refresh_secret(settings: Settings) -> str:
    return str(settings.refresh_token_secret)


def decode_segment(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def apply_changes(claims: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`claims` updated with `changes`; a change to REMOVE drops the claim."""
    for name, value in changes.items():
        if value is REMOVE:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims
