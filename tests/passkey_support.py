"""A software authenticator for the server's passkey tests: an EC P-256 key signed with
`cryptography`, attestation format "none", and the JSON a browser sends (WebAuthn L2 §5.1).

Each knob a test turns (origin, RP id, user verification, the counter, the user handle) is an
argument, so a test forges exactly one wrong thing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ORIGIN = "http://localhost:8000"
RP_ID = "localhost"
FLAG_UP, FLAG_UV, FLAG_BE, FLAG_AT = 0x01, 0x04, 0x08, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftAuthenticator:
    """One credential on one authenticator; `sign_count` moves up with every assertion."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(16))
    sign_count: int = 0
    user_handle: bytes | None = None

    def create(
        self, options: dict[str, Any], *, origin: str = ORIGIN, rp_id: str | None = None
    ) -> dict[str, Any]:
        """The creation response for `options` (as POST /passkeys/register/options answers)."""
        self.user_handle = unb64url(options["user"]["id"])
        numbers = self.key.public_key().public_numbers()
        cose_key = {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32), -3: numbers.y.to_bytes(32)}
        attested = (
            bytes(16)  # AAGUID: none
            + len(self.credential_id).to_bytes(2)
            + self.credential_id
            + cbor2.dumps(cose_key)
        )
        auth_data = self._auth_data(rp_id or options["rp"]["id"], FLAG_UP | FLAG_UV | FLAG_AT)
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data + attested})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str = ORIGIN,
        rp_id: str | None = None,
        user_verified: bool = True,
        sign_count: int | None = None,
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """The assertion for `options` (as POST /passkeys/login/options answers); the counter
        moves up by one unless `sign_count` is given."""
        self.sign_count = self.sign_count + 1 if sign_count is None else sign_count
        flags = FLAG_UP | (FLAG_UV if user_verified else 0)
        auth_data = self._auth_data(rp_id or options["rpId"], flags)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        handle = user_handle if user_handle is not None else self.user_handle
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle) if handle is not None else None,
            },
            "clientExtensionResults": {},
        }

    def _auth_data(self, rp_id: str, flags: int) -> bytes:
        return (
            hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + self.sign_count.to_bytes(4)
        )

    @staticmethod
    def _client_data(kind: str, challenge: str, origin: str) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}
        return json.dumps(data).encode()
