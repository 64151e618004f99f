"""DPoP at the token endpoint (RFC 9449 §5): a request's proof, checked, and accepted once.

The checks are the library's (`tokenrota.dpop`); what the service adds is the URL the proof must
name (the published one, never the request's Host) and a replay check every instance shares.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from tokenrota.dpop import PROOF_LEEWAY, PROOF_MAX_AGE, Proof, check_proof

from tokenrota_server.db import dpop_proofs
from tokenrota_server.errors import InvalidDPoPProof


class ProofChecker:
    """Checks the DPoP proofs sent to the service's endpoints under `base_url`."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url.rstrip("/")

    async def accept(
        self, pool: asyncpg.Pool, proofs: list[str], *, method: str, path: str, now: datetime
    ) -> Proof | None:
        """The request's proof, checked and recorded; None without one. Raises
        `InvalidDPoPProof` for two proofs, a proof failing a check, or one seen before."""
        if not proofs:
            return None
        if len(proofs) > 1:
            raise InvalidDPoPProof("Send one DPoP proof.")
        proof = check_proof(proofs[0], method=method, url=self._base_url + path, now=now)
        # Kept until the proof would be refused as too old anyway (iat may be `leeway` ahead).
        expires_at = datetime.fromtimestamp(proof.issued_at + PROOF_MAX_AGE + PROOF_LEEWAY + 1, UTC)
        async with pool.acquire() as connection:
            first = await dpop_proofs.record_first_use(
                connection, jkt=proof.jkt, jti=proof.jti, expires_at=expires_at
            )
        if not first:
            raise InvalidDPoPProof("The DPoP proof was used before.")
        return proof
