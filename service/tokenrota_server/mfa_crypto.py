"""Keys of the second factors: TOTP secrets sealed at rest, recovery codes kept as MACs.

Both keys are derived (HKDF-SHA256, a label each) from MFA_ENCRYPTION_KEY, so a copy of the
database alone yields neither a TOTP secret nor a recovery code: recovery codes carry ~50 bits,
which a plain hash would let an offline search find.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tokenrota_server.config import Settings

NONCE_BYTES = 12


class FactorKeys:
    """Seals and opens TOTP secrets (AES-256-GCM, the factor's id as associated data, so a
    ciphertext moved to another row does not open), and digests recovery codes (HMAC-SHA256)."""

    def __init__(self, settings: Settings) -> None:
        material = settings.mfa_key_material
        self._cipher = AESGCM(_derive(material, b"tokenrota totp secret"))
        self._code_key = _derive(material, b"tokenrota recovery code")

    def __repr__(self) -> str:
        return "FactorKeys(<keys hidden>)"

    def seal(self, factor_id: uuid.UUID, secret: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, secret.encode("ascii"), factor_id.bytes)

    def open(self, factor_id: uuid.UUID, sealed: bytes) -> str | None:
        """The secret, or None if it does not open under this key (a changed key, a moved row)."""
        try:
            plain = self._cipher.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], factor_id.bytes
            )
        except (InvalidTag, ValueError):
            return None
        return plain.decode("ascii")

    def code_digest(self, normalized_code: str) -> bytes:
        return hmac.new(self._code_key, normalized_code.encode(), hashlib.sha256).digest()


def _derive(material: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(material)
