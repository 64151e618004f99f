"""tokenrota.dpop: DPoP proofs (RFC 9449) from our own forge and from an independent client
(requests-oauth2client, on jwskate), and every refusal the OpenID conformance suite tries."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jwskate import Jwk
from requests_oauth2client import DPoPKey
from tokenrota.dpop import (
    NONCE_STEP,
    Nonces,
    Proof,
    ProofKey,
    ReplayCache,
    access_token_hash,
    check_proof,
    normalized_uri,
    thumbprint,
)
from tokenrota.errors import InvalidDPoPProof, UseDPoPNonce

from tests.dpop_support import NOW, URL, Signer, b64, stamp

ACCESS_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def es256() -> Signer:
    """A P-256 key for the refusal cases."""
    return Signer("ES256")


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"])
def test_a_proof_of_each_allowed_algorithm_is_accepted_with_its_thumbprint(alg: str) -> None:
    """Each allowed algorithm verifies, and jkt is the RFC 7638 thumbprint jwskate computes."""
    signer = Signer(alg)

    proof = check_proof(signer.proof(), method="POST", url=URL, now=NOW)

    assert proof.jkt == Jwk(signer.jwk).thumbprint()
    assert proof.issued_at == stamp(NOW)


def test_the_thumbprint_of_the_rfc_7638_example_key() -> None:
    """RFC 7638 §3.1's RSA key has the thumbprint the RFC gives."""
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }

    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA"])
def test_proofs_made_by_requests_oauth2client_are_accepted(alg: str) -> None:
    """An independent implementation's proofs (jwskate signs them) pass, ath and nonce included."""
    key = DPoPKey.generate(alg=alg)
    now = datetime.now(UTC)

    proof = key.proof(htm="GET", htu="https://api.example/orders?page=2", ath=None, nonce="n-1")
    bound = key.proof(htm="GET", htu="https://api.example/orders", ath=access_token_hash("tok"))

    checked = check_proof(
        str(proof), method="GET", url="https://api.example/orders", now=now, nonce="n-1"
    )
    assert checked.jkt == key.private_key.public_jwk().thumbprint()
    check_proof(
        str(bound), method="GET", url="https://api.example/orders", now=now, access_token="tok"
    )


def refused(proof: str, **overrides: Any) -> InvalidDPoPProof:
    arguments: dict[str, Any] = {"method": "POST", "url": URL, "now": NOW, **overrides}
    with pytest.raises(InvalidDPoPProof) as raised:
        check_proof(proof, **arguments)
    return raised.value


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"typ": None},
        {"alg": None},
        {"alg": "none"},
        {"alg": "HS256"},
        {"alg": "RS256"},  # an EC key under an RSA algorithm
        {"alg": "ES384"},
        {"jwk": None},
        {"jwk": "not an object"},
    ],
    ids=lambda header: ",".join(f"{k}={v}" for k, v in header.items()),
)
def test_a_proof_with_a_bad_header_is_refused(es256: Signer, header: dict[str, Any]) -> None:
    """Wrong typ, a missing, symmetric or unlisted alg, or no jwk: invalid_dpop_proof."""
    error = refused(es256.proof(header))

    assert error.code == "invalid_dpop_proof"


def test_a_private_key_in_the_jwk_is_refused(es256: Signer) -> None:
    """A jwk carrying `d` leaked its private key; the proof is refused however well signed."""
    refused(es256.proof({"jwk": es256.private}))


def test_an_rsa_key_under_2048_bits_is_refused() -> None:
    """A 1024-bit RSA key signs a valid proof, refused for its size."""
    weak = Signer("RS256", rsa_bits=1024)

    assert "short" in refused(weak.proof()).description


def test_a_key_whose_jwk_names_another_algorithm_is_refused(es256: Signer) -> None:
    """`jwk.alg` must agree with the header's alg."""
    refused(es256.proof({"jwk": {**es256.jwk, "alg": "ES384"}}))


def test_a_bad_signature_is_refused(es256: Signer) -> None:
    """A proof signed by one key but carrying another's jwk."""
    other = Signer("ES256")

    refused(
        es256.sign(
            {"typ": "dpop+jwt", "alg": "ES256", "jwk": other.jwk},
            {"jti": "a", "htm": "POST", "htu": URL, "iat": stamp(NOW)},
        )
    )


def test_es256_signatures_of_every_integer_shape_verify(es256: Signer) -> None:
    """r and s as JWS spells them (32 bytes each) verify whatever their shape: a leading zero
    byte (a shorter integer) or a high first bit (which DER pads with a zero byte)."""
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": es256.jwk}
    wanted = {
        "r has a leading zero byte": lambda signature: signature[0] == 0,
        "s has a leading zero byte": lambda signature: signature[32] == 0,
        "r has its high bit set": lambda signature: signature[0] >= 0x80,
        "s has its high bit set": lambda signature: signature[32] >= 0x80,
    }
    seen: set[str] = set()

    # About 1 signature in 256 has a given leading zero byte: a few thousand find each shape.
    for number in range(20_000):
        proof = es256.sign(
            header, {"jti": str(number), "htm": "POST", "htu": URL, "iat": stamp(NOW)}
        )
        signature = base64.urlsafe_b64decode(proof.rsplit(".", 1)[1] + "==")
        shapes = {shape for shape, has in wanted.items() if has(signature)} - seen
        if shapes:
            check_proof(proof, method="POST", url=URL, now=NOW)
            seen |= shapes
        if seen == set(wanted):
            break

    assert seen == set(wanted)


@pytest.mark.parametrize("signature", [bytes(64), b"\xff" * 64, bytes(32) + b"\x01" * 32])
def test_an_es256_signature_out_of_range_is_refused(es256: Signer, signature: bytes) -> None:
    """r or s zero, or past the group order: refused, never an error of another kind."""
    signing_input = es256.proof().rsplit(".", 1)[0]

    assert "signature" in refused(f"{signing_input}.{b64(signature)}").description


def test_a_tampered_claim_breaks_the_signature(es256: Signer) -> None:
    """Changing htm after signing is a bad signature, not an accepted proof for GET."""
    header, claims, signature = es256.proof().split(".")
    forged = json.loads(base64.urlsafe_b64decode(claims + "=="))
    forged["htm"] = "GET"

    refused(f"{header}.{b64(json.dumps(forged).encode())}.{signature}", method="GET")


@pytest.mark.parametrize(
    "claims",
    [
        {"jti": None},
        {"jti": ""},
        {"jti": "x" * 257},
        {"jti": 7},
        {"htm": "GET"},
        {"htm": None},
        {"htu": "https://auth.example/oauth/revoke"},
        {"htu": "https://evil.example/oauth/token"},
        {"htu": "http://auth.example/oauth/token"},
        {"htu": "https://auth.example:8443/oauth/token"},
        {"htu": "/oauth/token"},
        {"htu": None},
        {"iat": None},
        {"iat": "1796644800"},
        {"iat": True},
        {"iat": stamp(NOW - timedelta(seconds=66))},
        {"iat": stamp(NOW + timedelta(seconds=6))},
    ],
    ids=lambda claims: ",".join(f"{k}={v}" for k, v in claims.items())[:60],
)
def test_a_proof_with_a_bad_claim_is_refused(es256: Signer, claims: dict[str, Any]) -> None:
    """Missing or malformed jti; another method or URI; iat absent, mistyped, old or future."""
    refused(es256.proof(**claims))


def test_iat_at_the_edges_of_the_window_is_accepted(es256: Signer) -> None:
    """Up to max_age + leeway in the past and leeway in the future (60 s and 5 s)."""
    for moment in (NOW - timedelta(seconds=65), NOW + timedelta(seconds=5)):
        check_proof(es256.proof(iat=stamp(moment)), method="POST", url=URL, now=NOW)


@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://Auth.Example/oauth/token",
        "https://auth.example:443/oauth/token",
        "https://auth.example/oauth/token?x=1",
        "https://auth.example/oauth/token#frag",
    ],
)
def test_htu_is_compared_after_normalisation(es256: Signer, htu: str) -> None:
    """Scheme and host case, the default port, query and fragment do not matter (§4.3 step 9)."""
    check_proof(es256.proof(htu=htu), method="POST", url=URL, now=NOW)


def test_normalized_uri_refuses_what_is_not_an_absolute_http_uri() -> None:
    """Relative, userinfo, other schemes and bad ports normalise to nothing."""
    for uri in ("/token", "ftp://a.example/x", "https://u@a.example/x", "https://a.example:x/"):
        assert normalized_uri(uri) is None


def test_ath_must_be_the_hash_of_the_access_token(es256: Signer) -> None:
    """At a resource: a missing ath, or one for another token, is refused."""
    good = es256.proof(ath=access_token_hash(ACCESS_TOKEN))

    check_proof(good, method="POST", url=URL, now=NOW, access_token=ACCESS_TOKEN)
    refused(es256.proof(), access_token=ACCESS_TOKEN)
    refused(es256.proof(ath=access_token_hash(ACCESS_TOKEN + "x")), access_token=ACCESS_TOKEN)


def test_a_missing_or_stale_nonce_asks_for_the_nonce(es256: Signer) -> None:
    """use_dpop_nonce, a kind of invalid_dpop_proof, when the nonce is absent or old."""
    for proof in (es256.proof(), es256.proof(nonce="old")):
        with pytest.raises(UseDPoPNonce):
            check_proof(proof, method="POST", url=URL, now=NOW, nonce="current")

    check_proof(es256.proof(nonce="current"), method="POST", url=URL, now=NOW, nonce="current")


NONCE_SECRET = b"a nonce secret of thirty-two bytes or more"


def test_server_nonces_live_two_steps_and_rotate(es256: Signer) -> None:
    """A nonce is accepted in its own step and the next, refused from the one after; each step
    hands out a new one."""
    nonces = Nonces(NONCE_SECRET)
    handed_out = nonces.current(NOW)
    proof = es256.proof(nonce=handed_out)

    for later in (0, NONCE_STEP):
        moment = NOW + timedelta(seconds=later)
        check_proof(
            proof, method="POST", url=URL, now=moment, nonce=nonces.accepted(moment), max_age=10**6
        )
    stale = NOW + timedelta(seconds=2 * NONCE_STEP)
    with pytest.raises(UseDPoPNonce):
        check_proof(
            proof, method="POST", url=URL, now=stale, nonce=nonces.accepted(stale), max_age=10**6
        )
    assert nonces.current(NOW + timedelta(seconds=NONCE_STEP)) != handed_out


def test_server_nonces_are_the_same_for_the_same_secret_only(es256: Signer) -> None:
    """Two instances with one secret accept each other's nonces; another secret's are refused."""
    nonce = Nonces(NONCE_SECRET).current(NOW)

    assert nonce in Nonces(NONCE_SECRET).accepted(NOW)
    assert nonce not in Nonces(NONCE_SECRET + b"!").accepted(NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", nonce)
    with pytest.raises(ValueError, match="32 bytes"):
        Nonces(b"short")


@pytest.mark.parametrize(
    "proof",
    [
        "",
        "a.b",
        "a.b.c.d",
        "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.",
        "eyJ0eXAiOiJkcG9wK2p3dCJ9=.e30.AA",
        "W10.e30.AA",  # a header that is a JSON array
        "x" * 9000,
    ],
)
def test_what_is_not_a_compact_jws_is_refused(proof: str) -> None:
    """Empty, short, long, padded or non-object segments."""
    refused(proof)


def test_non_canonical_base64_in_the_key_is_refused(es256: Signer) -> None:
    """A coordinate with stray trailing bits has two spellings; refused."""
    x = es256.jwk["x"]
    twisted = x[:-1] + ("B" if x[-1] == "A" else "A")

    refused(es256.proof({"jwk": {**es256.jwk, "x": twisted}}))


def test_stray_trailing_bits_in_the_signature_are_refused(es256: Signer) -> None:
    """A signature segment whose last character carries unused bits decodes to the same bytes,
    a second spelling of one proof; refused although its signature verifies."""
    proof = es256.proof()
    signing_input, signature = proof.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(signature) % 4 == 2  # 64 bytes: the last character has 4 unused bits
    twisted = signature[:-1] + alphabet[alphabet.index(signature[-1]) | 1]
    assert base64.urlsafe_b64decode(twisted + "==") == base64.urlsafe_b64decode(signature + "==")

    check_proof(proof, method="POST", url=URL, now=NOW)
    refused(f"{signing_input}.{twisted}")


def test_a_header_seen_before_still_needs_each_proofs_own_signature(es256: Signer) -> None:
    """The checks of a header are remembered per process, its signature never: a proof under a
    header already accepted, signed by another key, is refused."""
    check_proof(es256.proof(), method="POST", url=URL, now=NOW)
    thief = Signer("ES256")

    forged = thief.sign(
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": es256.jwk},
        {"jti": "forged", "htm": "POST", "htu": URL, "iat": stamp(NOW)},
    )

    assert "signature" in refused(forged).description


def test_a_refused_header_is_refused_every_time(es256: Signer) -> None:
    """A refusal is not remembered as an acceptance: the same leaked-key header twice."""
    header = {"jwk": es256.private}

    first = refused(es256.proof(header))
    second = refused(es256.proof(header))

    assert first.description == second.description


def test_the_replay_cache_refuses_a_jti_twice_within_its_window() -> None:
    """Once per (key, jti) while the window lasts; another key's same jti is its own."""
    cache = ReplayCache(window=70)
    proof = Proof(jkt="k1", jti="j", issued_at=stamp(NOW))

    assert cache.first_use(proof, NOW)
    assert not cache.first_use(proof, NOW + timedelta(seconds=69))
    assert cache.first_use(Proof(jkt="k2", jti="j", issued_at=stamp(NOW)), NOW)
    assert cache.first_use(proof, NOW + timedelta(seconds=71))


def test_the_replay_cache_stays_within_its_capacity() -> None:
    """Past its capacity it forgets the oldest entry rather than refusing fresh proofs."""
    cache = ReplayCache(capacity=3, window=70)
    proofs = [Proof(jkt="k", jti=str(n), issued_at=0) for n in range(5)]

    assert all(cache.first_use(proof, NOW) for proof in proofs)
    assert cache.first_use(proofs[0], NOW)
    assert not cache.first_use(proofs[4], NOW)


def test_a_proof_key_makes_proofs_that_pass_the_checks() -> None:
    """ProofKey (for clients): htu without query or fragment, ath and nonce when given, a new
    jti each time, and its jkt the thumbprint of its public JWK (no private member in it)."""
    key = ProofKey()
    url = "https://api.example/orders?page=2#top"

    made = [key.proof("GET", url, now=NOW, access_token=ACCESS_TOKEN, nonce="n") for _ in range(2)]
    checked = [
        check_proof(proof, method="GET", url=url, now=NOW, access_token=ACCESS_TOKEN, nonce="n")
        for proof in made
    ]

    assert {proof.jkt for proof in checked} == {key.jkt} == {thumbprint(key.jwk)}
    assert checked[0].jti != checked[1].jti
    assert "d" not in key.jwk
