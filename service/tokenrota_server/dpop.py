"""DPoP at the token endpoint (RFC 9449 §5): a request's proof, checked, and accepted once.

The checks are the library's (`tokenrota.dpop`); what the service adds is the URL the proof must
name (the published one, never the request's Host), a replay check every instance shares, and,
with DPOP_NONCE, nonces derived from a secret every instance holds (`tokenrota.dpop.Nonces`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from tokenrota.dpop import PROOF_LEEWAY, PROOF_MAX_AGE, Nonces, Proof, check_proof
from tokenrota.errors import UseDPoPNonce

from tokenrota_server.db import dpop_proofs
from tokenrota_server.db.pool import Connection
from tokenrota_server.errors import InvalidDPoPProof

USED_BEFORE = "The DPoP proof was used before."


class ProofChecker:
    """Checks the DPoP proofs sent to the service's endpoints under `base_url`; with `nonces`,
    a proof must carry one of them (else `UseDPoPNonce`, naming the nonce to use)."""

    def __init__(self, base_url: str, nonces: Nonces | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._nonces = nonces

    def check(
        self,
        proofs: list[str],
        *,
        method: str,
        path: str,
        now: datetime,
        access_token: str | None = None,
    ) -> Proof | None:
        """The request's proof, checked but not yet recorded; None without one. Raises
        `InvalidDPoPProof` for two proofs or a proof failing a check. Writes nothing, so a
        request refused later (a wrong password) leaves no trace of its proof."""
        if not proofs:
            return None
        if len(proofs) > 1:
            raise InvalidDPoPProof("Send one DPoP proof.")
        url = self._base_url + path
        nonces = self._nonces
        try:
            return check_proof(
                proofs[0],
                method=method,
                url=url,
                now=now,
                access_token=access_token,
                nonce=nonces.accepted(now) if nonces is not None else None,
            )
        except UseDPoPNonce:
            assert nonces is not None
            raise UseDPoPNonce(nonces.current(now)) from None

    def current_nonce(self, now: datetime) -> str | None:
        """The nonce to hand out at `now`; None when no nonce is asked for."""
        return self._nonces.current(now) if self._nonces is not None else None

    async def accept(
        self, pool: asyncpg.Pool, proofs: list[str], *, method: str, path: str, now: datetime
    ) -> Proof | None:
        """`check`, then `record`: the request's proof, accepted once."""
        proof = self.check(proofs, method=method, path=path, now=now)
        if proof is not None:
            async with pool.acquire() as connection:
                await record(connection, proof)
        return proof


async def record(connection: Connection, proof: Proof) -> None:
    """Accept `proof` once across instances; raise `InvalidDPoPProof` if it was seen before."""
    if not await dpop_proofs.record_first_use(
        connection, jkt=proof.jkt, jti=proof.jti, expires_at=kept_until(proof)
    ):
        raise InvalidDPoPProof(USED_BEFORE)


def kept_until(proof: Proof) -> datetime:
    """Until when a proof is remembered: until it would be refused as too old anyway (its iat
    may be `leeway` ahead)."""
    return datetime.fromtimestamp(proof.issued_at + PROOF_MAX_AGE + PROOF_LEEWAY + 1, UTC)
