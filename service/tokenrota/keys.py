"""Asymmetric keys for access tokens: loading PEMs, key ids, and the published JWK set.

Each key is bound to exactly one algorithm when it is loaded (ES256 for a P-256 key, RS256 for
an RSA key of 2048 bits or more), and looked up by its `kid`, the RFC 7638 thumbprint of its
public JWK. A token's header may name a kid; it never chooses the algorithm.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk
from jose.exceptions import JOSEError
from jose.utils import base64url_encode

from tokenrota.errors import ConfigError

ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")
MIN_RSA_BITS = 2048
# The members of a public JWK that its RFC 7638 thumbprint covers, by key type.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


@dataclass(frozen=True)
class BoundKey:
    """A key usable under one algorithm only; `key` is python-jose's key object."""

    kid: str
    algorithm: str
    key: Any
    public_jwk: Mapping[str, str]


@dataclass(frozen=True)
class KeyRing:
    """The key that signs access tokens, and every public key still accepted, by kid."""

    signing: BoundKey
    verifying: Mapping[str, BoundKey]

    def __repr__(self) -> str:
        return f"KeyRing(signing={self.signing.kid!r}, verifying={list(self.verifying)!r})"

    def jwks(self) -> dict[str, Any]:
        """The JWK set to publish: public members only."""
        return {"keys": [dict(bound.public_jwk) for bound in self.verifying.values()]}


def load_key_ring(signing_pem: str, previous_pems: Iterable[str] = ()) -> KeyRing:
    """Bind the signing key and the previous public keys; raise `ConfigError` if unusable."""
    private_key = _load_private(signing_pem)
    algorithm = _algorithm_of(private_key.public_key())
    try:
        signer = jwk.construct(signing_pem, algorithm)
    except JOSEError:
        raise ConfigError("ACCESS_TOKEN_SIGNING_KEY cannot be used") from None
    current = public_key_of(private_key.public_key())
    signing = BoundKey(current.kid, algorithm, signer, current.public_jwk)
    verifying = {current.kid: current}
    for pem in previous_pems:
        previous = public_key_of(_load_any_public(pem))
        verifying.setdefault(previous.kid, previous)
    return KeyRing(signing=signing, verifying=verifying)


def public_key_of(public_key: Any) -> BoundKey:
    """A public key from `cryptography`, bound to its algorithm, with its kid and JWK."""
    algorithm = _algorithm_of(public_key)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    bound = jwk.construct(pem, algorithm)
    members = {name: str(value) for name, value in bound.to_dict().items()}
    public = {name: members[name] for name in _THUMBPRINT_MEMBERS[members["kty"]]}
    kid = thumbprint(public)
    return BoundKey(kid, algorithm, bound, {**public, "kid": kid, "alg": algorithm, "use": "sig"})


def key_from_jwk(member: Mapping[str, Any]) -> BoundKey | None:
    """A published JWK as a verification key; None for anything not ES256/RS256 and public.

    Used by verifiers reading our JWKS: an `oct` (HMAC) key, a key without `alg`, or an
    algorithm that does not fit the key type is skipped, never guessed.
    """
    algorithm, key_type = str(member.get("alg")), member.get("kty")
    expected_type = {"ES256": "EC", "RS256": "RSA"}.get(algorithm)
    if expected_type is None or key_type != expected_type or "d" in member:
        return None
    try:
        public = {name: str(member[name]) for name in _THUMBPRINT_MEMBERS[expected_type]}
        bound = jwk.construct(dict(public, alg=algorithm), algorithm)
    except (KeyError, JOSEError, TypeError, ValueError):
        return None
    if expected_type == "EC" and public["crv"] != "P-256":
        return None
    kid = member.get("kid")
    kid = kid if isinstance(kid, str) else thumbprint(public)
    return BoundKey(kid, algorithm, bound, {**public, "kid": kid, "alg": algorithm})


def thumbprint(public: Mapping[str, str]) -> str:
    """RFC 7638: base64url SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps(dict(sorted(public.items())), separators=(",", ":"))
    return str(base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode("ascii"))


def _algorithm_of(public_key: Any) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name != "secp256r1":
            raise ConfigError("an EC access token key must be on P-256 (ES256)")
        return "ES256"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"an RSA access token key must have at least {MIN_RSA_BITS} bits")
        return "RS256"
    raise ConfigError("an access token key must be an EC P-256 or RSA key")


def _load_private(pem: str) -> Any:
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            "ACCESS_TOKEN_SIGNING_KEY must be an unencrypted PEM private key"
        ) from None


def _load_any_public(pem: str) -> Any:
    """The public key of a PEM holding either a public or a private key."""
    try:
        return serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        pass
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None).public_key()
    except (ValueError, TypeError):
        raise ConfigError("ACCESS_TOKEN_PREVIOUS_KEYS must name PEM key files") from None
