"""DPoP helpers for the tests: keys of every allowed algorithm, signing any header and claims."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from tokenrota.dpop import thumbprint

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
URL = "https://auth.example/oauth/token"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def integer(value: int, size: int | None = None) -> str:
    return b64(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


class Signer:
    """A private key and its public JWK, able to sign any header and claims."""

    def __init__(self, alg: str, rsa_bits: int = 2048) -> None:
        self.alg = alg
        if alg == "ES256":
            self.key: Any = ec.generate_private_key(ec.SECP256R1())
            numbers = self.key.public_key().public_numbers()
            self.jwk = {
                "kty": "EC",
                "crv": "P-256",
                "x": integer(numbers.x, 32),
                "y": integer(numbers.y, 32),
            }
            self.private = {**self.jwk, "d": integer(self.key.private_numbers().private_value, 32)}
        elif alg in ("EdDSA", "Ed25519"):
            self.key = ed25519.Ed25519PrivateKey.generate()
            raw = self.key.public_key().public_bytes_raw()
            self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
            self.private = {**self.jwk, "d": b64(self.key.private_bytes_raw())}
        else:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
            numbers = self.key.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "n": integer(numbers.n), "e": integer(numbers.e)}
            self.private = {**self.jwk, "d": integer(self.key.private_numbers().d)}

    def sign(self, header: dict[str, Any], claims: dict[str, Any], alg: str | None = None) -> str:
        signing_input = ".".join(
            b64(json.dumps(part).encode()) for part in (header, claims)
        ).encode("ascii")
        alg = alg or self.alg
        if alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg in ("EdDSA", "Ed25519"):
            signature = self.key.sign(signing_input)
        elif alg == "RS256":
            signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
            signature = self.key.sign(signing_input, pss, hashes.SHA256())
        return f"{signing_input.decode('ascii')}.{b64(signature)}"

    def proof(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A proof for POST URL at NOW; `header`/`claims` override (None removes a member)."""
        full_header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk, **(header or {})}
        full_claims = {"jti": str(uuid.uuid4()), "htm": "POST", "htu": URL, "iat": stamp(NOW)}
        full_claims.update(claims)
        return self.sign(
            {k: v for k, v in full_header.items() if v is not None},
            {k: v for k, v in full_claims.items() if v is not None},
        )


def stamp(moment: datetime) -> int:
    return int(moment.timestamp())


def proof_key(proof: str) -> str:
    """The thumbprint of the key in a browser's proof (ES256) header."""
    header = proof.split(".")[0]
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    assert decoded["typ"] == "dpop+jwt"
    assert decoded["alg"] == "ES256"
    return thumbprint(decoded["jwk"])


def proof_claims(proof: str) -> dict[str, Any]:
    """The claims of a proof, read without checking it."""
    payload = proof.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims
