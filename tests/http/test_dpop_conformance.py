"""The OpenID conformance suite's DPoP negative cases, one test each, at a bearer route of the
service (/profile with a DPoP-bound session's token): each is refused, and none is recorded as
a used proof. The token endpoint's refusals are in test_oauth_dpop.py and test_dpop_sessions.py;
the verifier's in tests/lib/test_verify_dpop.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota.dpop import NONCE_STEP, Nonces, access_token_hash
from tokenrota_server.config import Settings

from tests.dpop_support import Signer, b64, stamp
from tests.support import PASSWORD, FakeClock, Register, serve

PROFILE = "/profile"


@pytest.fixture(scope="module")
def owner() -> Signer:
    return Signer("ES256")


@dataclass
class Bound:
    """A DPoP-bound session's access token, and how to make proofs for /profile with it."""

    client: httpx.AsyncClient
    settings: Settings
    clock: FakeClock
    signer: Signer
    access: str

    def proof(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        values: dict[str, Any] = {
            "htm": "GET",
            "htu": f"{self.settings.public_base_url}{PROFILE}",
            "iat": stamp(self.clock.now),
            "ath": access_token_hash(self.access),
            **claims,
        }
        return self.signer.proof(header, **values)

    async def call(self, proof: str | None, scheme: str = "DPoP") -> httpx.Response:
        headers = {"Authorization": f"{scheme} {self.access}"}
        if proof is not None:
            headers["DPoP"] = proof
        return await self.client.get(PROFILE, headers=headers)


async def bound_session(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    signer: Signer,
    nonce: str | None = None,
) -> Bound:
    user = await register(client)
    claims: dict[str, Any] = {"nonce": nonce} if nonce else {}
    login = signer.proof(htu=f"{settings.public_base_url}/login", iat=stamp(clock.now), **claims)
    response = await client.post(
        "/login", json={"email": user["email"], "password": PASSWORD}, headers={"DPoP": login}
    )
    return Bound(client, settings, clock, signer, response.json()["access_token"])


@pytest.fixture
async def bound(
    client: httpx.AsyncClient,
    settings: Settings,
    clock: FakeClock,
    register: Register,
    owner: Signer,
) -> Bound:
    return await bound_session(client, settings, clock, register, owner)


async def assert_refused(
    response: httpx.Response, db: asyncpg.Connection, code: str = "invalid_dpop_proof"
) -> None:
    """401 with the DPoP challenge naming `code`, and no proof recorded beyond the login's."""
    assert (response.status_code, response.json()["error"]) == (401, code)
    assert response.headers["www-authenticate"].startswith(f'DPoP error="{code}"')
    assert "user" not in response.json()
    assert await db.fetchval("SELECT count(*) FROM dpop_proofs") == 1


async def test_the_good_proof_is_accepted(bound: Bound) -> None:
    """The baseline every case below changes one thing of."""
    assert (await bound.call(bound.proof())).status_code == 200


async def test_wrong_typ(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof({"typ": "JWT"})), db)


async def test_missing_alg(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof({"alg": None})), db)


async def test_missing_jwk(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof({"jwk": None})), db)


async def test_missing_jti(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof(jti=None)), db)


async def test_alg_none(bound: Bound, db: asyncpg.Connection) -> None:
    """An unsigned proof, with and without a signature segment."""
    header, claims, _ = bound.proof({"alg": "none"}).split(".")
    for unsigned in (f"{header}.{claims}.", f"{header}.{claims}.{b64(b'x')}"):
        await assert_refused(await bound.call(unsigned), db)


async def test_alg_hs256(bound: Bound, db: asyncpg.Connection) -> None:
    """A proof MACed with a symmetric key it names itself: no proof of possession at all."""
    key = b"k" * 32
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(key)}}
    _, claims, _ = bound.proof().split(".")
    signing_input = f"{b64(json.dumps(header).encode())}.{claims}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()

    await assert_refused(await bound.call(f"{signing_input}.{b64(mac)}"), db)


async def test_private_key_in_jwk(bound: Bound, db: asyncpg.Connection, owner: Signer) -> None:
    await assert_refused(await bound.call(bound.proof({"jwk": owner.private})), db)


async def test_wrong_htm(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof(htm="POST")), db)


async def test_wrong_htu(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(
        await bound.call(bound.proof(htu=f"{bound.settings.public_base_url}/sessions")), db
    )


async def test_iat_too_old(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof(iat=stamp(bound.clock.now) - 120)), db)


async def test_iat_in_the_future(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof(iat=stamp(bound.clock.now) + 60)), db)


async def test_wrong_ath(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof(ath=access_token_hash("another"))), db)


async def test_missing_ath(bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await bound.call(bound.proof(ath=None)), db)


async def test_replayed_jti(bound: Bound, db: asyncpg.Connection) -> None:
    """The same proof twice, and a new proof reusing the jti: only the first passes."""
    first = bound.proof(jti="once")
    accepted = await bound.call(first)

    for again in (first, bound.proof(jti="once")):
        response = await bound.call(again)
        assert (response.status_code, response.json()["error"]) == (401, "invalid_dpop_proof")
    assert accepted.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM dpop_proofs") == 2


async def test_bad_signature(bound: Bound, db: asyncpg.Connection) -> None:
    header, claims, signature = bound.proof().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 1

    await assert_refused(await bound.call(f"{header}.{claims}.{b64(bytes(raw))}"), db)


async def test_key_not_matching_cnf_jkt(bound: Bound, db: asyncpg.Connection) -> None:
    """A valid proof by another key, for this very request and token."""
    thief = Signer("ES256")
    stolen = replace(bound, signer=thief)

    await assert_refused(await stolen.call(stolen.proof()), db)


async def test_bound_token_as_a_bearer(bound: Bound) -> None:
    """Without the DPoP scheme a bound token is refused, proof or not."""
    for proof in (None, bound.proof()):
        response = await bound.call(proof, scheme="Bearer")
        assert (response.status_code, response.json()["error"]) == (403, "invalid_token")


@pytest.fixture
async def nonce_bound(
    settings: Settings, clock: FakeClock, register: Register, owner: Signer
) -> AsyncIterator[Bound]:
    """A bound session on a service with DPOP_NONCE."""
    with_nonces = replace(settings, dpop_nonce=True)
    nonce = Nonces(str(settings.access_token_secret).encode()).current(clock.now)
    async with serve(with_nonces, clock) as client:
        yield await bound_session(client, with_nonces, clock, register, owner, nonce)


async def test_missing_nonce(nonce_bound: Bound, db: asyncpg.Connection) -> None:
    await assert_refused(await nonce_bound.call(nonce_bound.proof()), db, "use_dpop_nonce")


async def test_stale_nonce(nonce_bound: Bound, db: asyncpg.Connection) -> None:
    """The nonce of two steps ago: no longer accepted, and the answer names the current one."""
    nonces = Nonces(str(nonce_bound.settings.access_token_secret).encode())
    stale = nonces.current(nonce_bound.clock.now - timedelta(seconds=2 * NONCE_STEP))

    response = await nonce_bound.call(nonce_bound.proof(nonce=stale))

    await assert_refused(response, db, "use_dpop_nonce")
    assert response.headers["dpop-nonce"] == nonces.current(nonce_bound.clock.now)
