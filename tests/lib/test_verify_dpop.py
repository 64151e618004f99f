"""tokenrota.verify and DPoP-bound tokens (RFC 9449 §7): a proof by their key, or no access."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from requests_oauth2client import DPoPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tokenrota.dpop import NONCE_STEP, Nonces, access_token_hash, thumbprint
from tokenrota.verify import TokenVerifier, protect, token_claims

from tests import forge
from tests.dpop_support import NOW, Signer, stamp
from tests.support import FakeClock

ISSUER, AUDIENCE = "token-service", "https://api.tokenrota.test"
DATA = "http://api/data"
DPOP_CHALLENGE = 'DPoP error="invalid_dpop_proof"'


@pytest.fixture
def secret() -> str:
    """The HS256 secret the forged access tokens are signed with."""
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def holder() -> Signer:
    """The client's DPoP key: the one its tokens are bound to."""
    return Signer("ES256")


@pytest.fixture
async def api(secret: str) -> AsyncIterator[httpx.AsyncClient]:
    """A resource server behind `protect`, on a clock stopped at NOW."""
    async with client_of(app_with(secret)) as http:
        yield http


def app_with(
    secret: str, base_url: str | None = None, now: datetime = NOW, nonces: Nonces | None = None
) -> Starlette:
    clock = FakeClock()
    clock.now = now
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, secret=secret, clock=clock, dpop_nonces=nonces
    )

    async def data(request: Request) -> Response:
        claims = token_claims(request)
        return JSONResponse({"sub": claims.subject, "jkt": claims.confirmation_jkt})

    return Starlette(
        routes=[Route("/data", data, methods=["GET", "POST"])],
        middleware=[protect(verifier, base_url=base_url)],
    )


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def access_token(secret: str, jkt: str | None, **changes: Any) -> str:
    """A valid person's access token issued at NOW, bound to `jkt` when given."""
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": stamp(NOW),
        "exp": stamp(NOW) + 900,
        "jti": uuid.uuid4().hex,
        "email": "someone@example.com",
        "scope": "",
        **changes,
    }
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return forge.token(claims, secret)


def proof_for(
    signer: Signer, token: str, method: str = "GET", url: str = DATA, **claims: Any
) -> str:
    return signer.proof(htm=method, htu=url, ath=access_token_hash(token), **claims)


async def call(
    http: httpx.AsyncClient,
    token: str,
    proof: str | None,
    scheme: str = "DPoP",
    method: str = "GET",
) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return await http.request(method, "/data", headers=headers)


async def test_a_bound_token_with_its_keys_proof_is_accepted(
    api: httpx.AsyncClient, secret: str, holder: Signer
) -> None:
    """Authorization: DPoP, a proof for this method and URL with ath: the claims, jkt included."""
    token = access_token(secret, thumbprint(holder.jwk))

    response = await call(api, token, proof_for(holder, token))

    assert response.status_code == 200
    assert response.json()["jkt"] == thumbprint(holder.jwk)


async def test_a_bound_token_sent_as_a_bearer_is_refused(
    api: httpx.AsyncClient, secret: str, holder: Signer
) -> None:
    """Whoever copied the token has no key: 403 invalid_token, with or without a proof."""
    token = access_token(secret, thumbprint(holder.jwk))

    for proof in (None, proof_for(holder, token)):
        response = await call(api, token, proof, scheme="Bearer")

        assert (response.status_code, response.json()["error"]) == (403, "invalid_token")
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def test_a_bound_token_without_a_proof_is_asked_for_one(
    api: httpx.AsyncClient, secret: str, holder: Signer
) -> None:
    """The DPoP scheme without the DPoP header: 401 invalid_dpop_proof and the DPoP challenge."""
    token = access_token(secret, thumbprint(holder.jwk))

    response = await call(api, token, None)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_dpop_proof")
    assert response.headers["www-authenticate"].startswith(DPOP_CHALLENGE)
    assert 'algs="ES256 EdDSA Ed25519 RS256 PS256"' in response.headers["www-authenticate"]


async def test_a_proof_by_another_key_is_refused(
    api: httpx.AsyncClient, secret: str, holder: Signer
) -> None:
    """A thief's own key makes a valid proof, but not by the key the token names."""
    token = access_token(secret, thumbprint(holder.jwk))

    response = await call(api, token, proof_for(Signer("ES256"), token))

    assert (response.status_code, response.json()["error"]) == (401, "invalid_dpop_proof")


async def test_a_replayed_proof_is_refused(
    api: httpx.AsyncClient, secret: str, holder: Signer
) -> None:
    """The same proof twice: the second is a replay (the verifier remembers jti per key)."""
    token = access_token(secret, thumbprint(holder.jwk))
    proof = proof_for(holder, token)

    first, second = await call(api, token, proof), await call(api, token, proof)

    assert first.status_code == 200
    assert (second.status_code, second.json()["error"]) == (401, "invalid_dpop_proof")


@pytest.mark.parametrize(
    "change",
    [
        {"method": "POST"},
        {"url": "http://api/other"},
        {"url": "http://evil/data"},
        {"ath": access_token_hash("another token")},
        {"ath": None},
        {"iat": stamp(NOW) - 3600},
    ],
    ids=["htm", "htu-path", "htu-host", "ath-other", "ath-missing", "iat-old"],
)
async def test_a_proof_for_something_else_is_refused(
    api: httpx.AsyncClient, secret: str, holder: Signer, change: dict[str, Any]
) -> None:
    """Another method, URL, access token, or an old proof: 401 invalid_dpop_proof."""
    token = access_token(secret, thumbprint(holder.jwk))
    arguments: dict[str, Any] = {"method": "GET", "url": DATA, **change}
    method, url = arguments.pop("method"), arguments.pop("url")
    arguments.setdefault("ath", access_token_hash(token))

    proof = holder.proof(htm=method, htu=url, **arguments)
    response = await call(api, token, proof)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_dpop_proof")


async def test_two_proofs_are_refused(api: httpx.AsyncClient, secret: str, holder: Signer) -> None:
    """RFC 9449 §4.3 step 1: one DPoP header, not two."""
    token = access_token(secret, thumbprint(holder.jwk))
    headers = [
        ("Authorization", f"DPoP {token}"),
        ("DPoP", proof_for(holder, token)),
        ("DPoP", proof_for(holder, token)),
    ]

    response = await api.get("/data", headers=headers)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_dpop_proof")


async def test_an_unbound_token_under_the_dpop_scheme_is_refused(
    api: httpx.AsyncClient, secret: str, holder: Signer
) -> None:
    """A plain token dressed as DPoP is not bound to anything: 403 in DPoP's terms."""
    token = access_token(secret, None)

    response = await call(api, token, proof_for(holder, token))

    assert (response.status_code, response.json()["error"]) == (403, "invalid_token")
    assert response.headers["www-authenticate"].startswith('DPoP error="invalid_token"')


async def test_an_unbound_token_as_a_bearer_still_works(
    api: httpx.AsyncClient, secret: str
) -> None:
    """Tokens without cnf are unchanged: a plain bearer is accepted as before."""
    response = await call(api, access_token(secret, None), None, scheme="Bearer")

    assert response.status_code == 200
    assert response.json()["jkt"] is None


async def test_a_malformed_cnf_is_refused(api: httpx.AsyncClient, secret: str) -> None:
    """cnf without a string jkt is an ill-formed token, not an unbound one."""
    for cnf in ({"jkt": 7}, {"x5t#S256": "abc"}, "jkt"):
        token = access_token(secret, None, cnf=cnf)

        response = await call(api, token, None, scheme="Bearer")

        assert (response.status_code, response.json()["error"]) == (403, "invalid_token")


async def test_behind_a_proxy_the_proof_names_the_public_url(secret: str, holder: Signer) -> None:
    """With base_url, htu is the URL clients call, not the one the app sees from the proxy."""
    token = access_token(secret, thumbprint(holder.jwk))
    public = "https://api.example/data"

    async with client_of(app_with(secret, base_url="https://api.example/")) as proxied:
        accepted = await call(proxied, token, proof_for(holder, token, url=public))
    async with client_of(app_with(secret)) as direct:
        refused = await call(direct, token, proof_for(holder, token, url=public))

    assert accepted.status_code == 200
    assert refused.status_code == 401


async def test_proofs_from_requests_oauth2client_are_accepted(secret: str) -> None:
    """An independent DPoP client's key and proof (jwskate signs them) pass the verifier."""
    key = DPoPKey.generate(alg="ES256")
    now = datetime.now(UTC).replace(microsecond=0)
    token = access_token(
        secret, key.private_key.public_jwk().thumbprint(), iat=stamp(now), exp=stamp(now) + 900
    )

    proof = key.proof(htm="GET", htu=DATA, ath=access_token_hash(token))
    async with client_of(app_with(secret, now=now)) as http:
        response = await call(http, token, str(proof))

    assert response.status_code == 200


async def test_with_nonces_a_proof_must_carry_the_servers_current_one(
    secret: str, holder: Signer
) -> None:
    """dpop_nonces: no nonce or a stale one is 401 use_dpop_nonce with the nonce to use in
    DPoP-Nonce; the proof made again with it passes."""
    nonces = Nonces(b"the resource server's own nonce secret")
    token = access_token(secret, thumbprint(holder.jwk))
    stale = nonces.current(NOW - timedelta(seconds=2 * NONCE_STEP))
    async with client_of(app_with(secret, nonces=nonces)) as http:
        without = await call(http, token, proof_for(holder, token))
        old = await call(http, token, proof_for(holder, token, nonce=stale))
        retried = await call(
            http, token, proof_for(holder, token, nonce=without.headers["dpop-nonce"])
        )

    for refused in (without, old):
        assert (refused.status_code, refused.json()["error"]) == (401, "use_dpop_nonce")
        assert refused.headers["www-authenticate"].startswith('DPoP error="use_dpop_nonce"')
        assert refused.headers["dpop-nonce"] == nonces.current(NOW)
    assert retried.status_code == 200


async def test_with_nonces_a_success_names_the_current_nonce(secret: str, holder: Signer) -> None:
    """A proof with last period's nonce still passes, and the answer names this period's, so
    the client need not be refused to learn it; a bearer token's answer names none."""
    nonces = Nonces(b"the resource server's own nonce secret")
    bound = access_token(secret, thumbprint(holder.jwk))
    previous = nonces.current(NOW - timedelta(seconds=NONCE_STEP))
    async with client_of(app_with(secret, nonces=nonces)) as http:
        accepted = await call(http, bound, proof_for(holder, bound, nonce=previous))
        as_bearer = await call(http, access_token(secret, None), None, scheme="Bearer")

    assert accepted.status_code == 200
    assert accepted.headers["dpop-nonce"] == nonces.current(NOW) != previous
    assert as_bearer.status_code == 200
    assert "dpop-nonce" not in as_bearer.headers
