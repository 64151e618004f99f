"""DPoP proofs (RFC 9449): checking one, making one (`ProofKey`, for clients), and the
thumbprint that binds a token to its key.

Pure: no I/O, no clock (callers pass `now`). Replay of a proof's `jti` is the caller's to refuse,
in a store every instance shares (the service) or in a bounded cache of its own (`ReplayCache`,
for one resource server process).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tokenrota.errors import InvalidDPoPProof, UseDPoPNonce

PROOF_TYPE = "dpop+jwt"
# Asymmetric only (§4.3 step 5); RSA keys below 2048 bits are refused where the key is read.
# "Ed25519" is RFC 9864's fully-specified name for what "EdDSA" means here (an Ed25519 key);
# newer libraries (panva's `dpop`) sign with it.
ALGORITHMS = ("ES256", "EdDSA", "Ed25519", "RS256", "PS256")
MIN_RSA_BITS = 2048
# A proof is a few hundred bytes (an RSA key makes it ~1 KB); refused before any decoding work.
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 256
# How old a proof may be, and how far ahead of our clock it may claim to be (§11.1).
PROOF_MAX_AGE = 60
PROOF_LEEWAY = 5

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_BASE64URL_VALUE = {
    character: value
    for value, character in enumerate(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
}
_TO_STANDARD_BASE64 = bytes.maketrans(b"-_", b"+/")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# RFC 7638 §3.2: the members a thumbprint covers, per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
# A public JWK never carries these; a proof that does has leaked its private key (§4.3 step 7).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The one signature scheme ES256 names; an immutable description, built once.
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# How long one server nonce is handed out; it is accepted for one more step after that.
NONCE_STEP = 300


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof that passed every check but replay: its key's thumbprint, its jti and iat."""

    jkt: str
    jti: str
    issued_at: int


def check_proof(
    proof: str,
    *,
    method: str,
    url: str,
    now: datetime,
    access_token: str | None = None,
    nonce: str | Collection[str] | None = None,
    max_age: int = PROOF_MAX_AGE,
    leeway: int = PROOF_LEEWAY,
    algorithms: tuple[str, ...] = ALGORITHMS,
) -> Proof:
    """Check `proof` for a request of `method` to `url` (RFC 9449 §4.3); its `Proof`.

    `access_token` is given at resource requests, whose proofs must carry its hash (`ath`);
    `nonce` when the server demands one (or the nonces it accepts, see `Nonces`). Raises
    `InvalidDPoPProof`, or `UseDPoPNonce` when only the nonce is missing or stale.
    """
    signer, claims, signing_input, signature = _parse(proof, algorithms)
    try:
        signer.verify(signature, signing_input)
    except (InvalidSignature, ValueError):
        raise InvalidDPoPProof("The DPoP proof's signature is invalid.") from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidDPoPProof("The DPoP proof's jti is missing.")
    if claims.get("htm") != method:
        raise InvalidDPoPProof("The DPoP proof is for another method.")
    htu = claims.get("htu")
    # The same string is the same URI; any other spelling is compared normalised.
    if not isinstance(htu, str) or (htu != url and normalized_uri(htu) != normalized_uri(url)):
        raise InvalidDPoPProof("The DPoP proof is for another URI.")
    issued_at = claims.get("iat")
    moment = int(now.timestamp())
    if not _is_integer(issued_at) or not moment - max_age - leeway <= issued_at <= moment + leeway:
        raise InvalidDPoPProof("The DPoP proof is too old or from the future.")
    if access_token is not None and claims.get("ath") != access_token_hash(access_token):
        raise InvalidDPoPProof("The DPoP proof is not for this access token.")
    if nonce is not None:
        accepted = (nonce,) if isinstance(nonce, str) else nonce
        if claims.get("nonce") not in accepted:
            raise UseDPoPNonce()
    return Proof(jkt=signer.jkt, jti=jti, issued_at=issued_at)


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url: what `cnf.jkt` holds."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None or any(not isinstance(jwk.get(name), str) for name in members):
        raise InvalidDPoPProof("The DPoP proof's key is not a supported public key.")
    return _thumbprint_of(tuple((name, jwk[name]) for name in members))


# A client signs every proof with one key: its thumbprint, and the URIs proofs name, are worked
# out once per process (bounded caches: a flood of new keys or URIs only evicts).
@functools.lru_cache(maxsize=1024)
def _thumbprint_of(members: tuple[tuple[str, str], ...]) -> str:
    canonical = json.dumps(dict(members), separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """`ath`: the base64url SHA-256 of the access token's ASCII bytes (§4.2)."""
    return _b64(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


@functools.lru_cache(maxsize=256)
def normalized_uri(uri: str) -> tuple[str, str, str] | None:
    """`uri` as compared for `htu`: scheme and host lowercased, default port dropped, no query
    or fragment (§4.3 step 9, RFC 3986 §6.2.2-3). None when it is not an absolute http(s) URI."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return scheme, host, parts.path or "/"


class ProofKey:
    """A client's DPoP key, P-256 (ES256, what every server must accept), and its proofs.

    A new key by default: it lives as long as the object, as the tokens bound to it should.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._key = private_key or ec.generate_private_key(ec.SECP256R1())
        if not isinstance(self._key.curve, ec.SECP256R1):
            raise ValueError("a DPoP ProofKey is a P-256 key")
        numbers = self._key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
        self.jkt = thumbprint(self.jwk)

    def __repr__(self) -> str:
        return f"ProofKey(jkt={self.jkt!r})"

    def proof(
        self,
        method: str,
        url: str,
        *,
        now: datetime,
        access_token: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """A proof for one request (§4.2): `htu` is `url` without its query and fragment."""
        header = {"typ": PROOF_TYPE, "alg": "ES256", "jwk": self.jwk}
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url.split("#", 1)[0].split("?", 1)[0],
            "iat": int(now.timestamp()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode("utf-8"))
            for part in (header, claims)
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class ReplayCache:
    """The proofs one process has seen, to refuse a `jti` twice within the proof window.

    Bounded: past `capacity` live entries the oldest is forgotten, so a flood can only make a
    replay of a proof older than the flood possible, never refuse a fresh proof.
    """

    def __init__(self, capacity: int = 100_000, window: int = PROOF_MAX_AGE + 2 * PROOF_LEEWAY):
        self._capacity = capacity
        self._window = window
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()

    def first_use(self, proof: Proof, now: datetime) -> bool:
        """Record `proof`; False if its key already used its jti within the window."""
        moment = int(now.timestamp())
        while self._seen and next(iter(self._seen.values())) <= moment:
            self._seen.popitem(last=False)
        key = (proof.jkt, proof.jti)
        if key in self._seen:
            return False
        self._seen[key] = moment + self._window
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


class Nonces:
    """Server nonces (RFC 9449 §8-9), derived from a secret and the clock, not stored.

    The nonce of each `step`-second period is an HMAC of its number, so every process holding
    the secret hands out and accepts the same ones with no shared store and no write per
    request; a nonce is accepted during its own period and the next, then never again.
    """

    def __init__(self, secret: bytes, step: int = NONCE_STEP) -> None:
        if len(secret) < 32 or step < 1:
            raise ValueError("a nonce secret has at least 32 bytes and the step 1 second")
        # A key of its own, so a nonce says nothing about (and is no MAC under) `secret`.
        self._key = hmac.new(secret, b"tokenrota dpop nonce", hashlib.sha256).digest()
        self._step = step

    def current(self, now: datetime) -> str:
        """The nonce to hand out at `now`."""
        return self._of(int(now.timestamp()) // self._step)

    def accepted(self, now: datetime) -> frozenset[str]:
        """The nonces a proof may carry at `now`: this period's and the previous one's."""
        period = int(now.timestamp()) // self._step
        return frozenset((self._of(period), self._of(period - 1)))

    def _of(self, period: int) -> str:
        digest = hmac.new(self._key, period.to_bytes(8, "big", signed=True), hashlib.sha256)
        return _b64(digest.digest()[:16])


@dataclass(frozen=True, slots=True)
class _Signer:
    """What a proof's header names: its key's thumbprint, and how to check a signature by it."""

    jkt: str
    verify: Callable[[bytes, bytes], None]


def _parse(proof: str, algorithms: tuple[str, ...]) -> tuple[_Signer, dict[str, Any], bytes, bytes]:
    if len(proof) > MAX_PROOF_LENGTH or not _COMPACT_JWS.fullmatch(proof):
        raise InvalidDPoPProof("The DPoP proof is not a compact JWS.")
    encoded_header, encoded_claims, encoded_signature = proof.split(".")
    signer = _header_signer(encoded_header, algorithms)
    try:
        # Every segment is known base64url (the match above): only canonical form is left.
        claims = json.loads(_segment_bytes(encoded_claims).decode("utf-8"))
        signature = _segment_bytes(encoded_signature)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidDPoPProof("The DPoP proof is not a compact JWS.") from None
    if not isinstance(claims, dict):
        raise InvalidDPoPProof("The DPoP proof is not a compact JWS.")
    signing_input = proof[: len(encoded_header) + len(encoded_claims) + 1].encode("ascii")
    return signer, claims, signing_input, signature


# A client signs every proof under one header (its key does not change): the header's checks,
# its key and its thumbprint are worked out once per process. Bounded, so a flood of new headers
# only evicts; a refused header raises, and lru_cache keeps no failure.
@functools.lru_cache(maxsize=1024)
def _header_signer(encoded_header: str, algorithms: tuple[str, ...]) -> _Signer:
    header = _json_object(encoded_header)
    if header.get("typ") != PROOF_TYPE:
        raise InvalidDPoPProof("The DPoP proof's typ is not dpop+jwt.")
    algorithm = header.get("alg")
    if algorithm not in algorithms:
        raise InvalidDPoPProof("The DPoP proof's algorithm is not allowed.")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDPoPProof("The DPoP proof carries no public key.")
    verify = _verifier(algorithm, jwk)
    return _Signer(jkt=thumbprint(jwk), verify=verify)


def _json_object(encoded: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64(encoded).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidDPoPProof("The DPoP proof is not a compact JWS.") from None
    if not isinstance(value, dict):
        raise InvalidDPoPProof("The DPoP proof is not a compact JWS.")
    return value


def _verifier(algorithm: str, jwk: dict[str, Any]) -> Callable[[bytes, bytes], None]:
    """How to check a signature by `jwk` under `algorithm`: `(signature, signing_input)`,
    raising `InvalidSignature` or `ValueError` for a wrong one."""
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidDPoPProof("The DPoP proof's key is not a public key.")
    if "alg" in jwk and jwk["alg"] != algorithm:
        raise InvalidDPoPProof("The DPoP proof's key is for another algorithm.")
    try:
        if algorithm == "ES256" and jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            return functools.partial(_verify_es256, _p256_key(jwk["x"], jwk["y"]))
        if (
            algorithm in ("EdDSA", "Ed25519")
            and jwk.get("kty") == "OKP"
            and jwk.get("crv") == "Ed25519"
        ):
            return ed25519.Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"])).verify
        if algorithm in ("RS256", "PS256") and jwk.get("kty") == "RSA":
            rsa_key = rsa.RSAPublicNumbers(
                int.from_bytes(_unb64(jwk["e"]), "big"), int.from_bytes(_unb64(jwk["n"]), "big")
            ).public_key()
            if rsa_key.key_size < MIN_RSA_BITS:
                raise InvalidDPoPProof("The DPoP proof's RSA key is too short.")
            scheme: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if algorithm == "RS256"
                else padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
            )
            return functools.partial(_verify_rsa, rsa_key, scheme)
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise InvalidDPoPProof("The DPoP proof's signature is invalid.") from None
    raise InvalidDPoPProof("The DPoP proof's key does not fit its algorithm.")


def _verify_es256(key: ec.EllipticCurvePublicKey, signature: bytes, signing_input: bytes) -> None:
    # JWS carries r || s; cryptography wants DER.
    if len(signature) != 64:
        raise InvalidSignature()
    key.verify(_der_signature(signature[:32], signature[32:]), signing_input, _ECDSA_SHA256)


def _der_signature(r: bytes, s: bytes) -> bytes:
    """The DER ECDSA-Sig-Value of big-endian `r` and `s` of up to 32 bytes each: what
    `encode_dss_signature` gives for their integers, at half its cost (no integers made)."""
    # An INTEGER is minimal and positive: no leading zero bytes, but one before a high bit.
    r, s = r.lstrip(b"\0"), s.lstrip(b"\0")
    if not r or r[0] & 0x80:
        r = b"\0" + r
    if not s or s[0] & 0x80:
        s = b"\0" + s
    # At most 33 bytes each, so every length fits DER's one-byte short form.
    return b"".join((bytes((0x30, len(r) + len(s) + 4, 0x02, len(r))), r, bytes((0x02, len(s))), s))


def _verify_rsa(
    key: rsa.RSAPublicKey,
    scheme: padding.AsymmetricPadding,
    signature: bytes,
    signing_input: bytes,
) -> None:
    key.verify(signature, signing_input, scheme, hashes.SHA256())


def _p256_key(x: str, y: str) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicNumbers(
        _coordinate(x), _coordinate(y), ec.SECP256R1()
    ).public_key()


def _coordinate(encoded: object) -> int:
    raw = _unb64(encoded)
    if len(raw) != 32:
        raise ValueError("a P-256 coordinate is 32 bytes")
    return int.from_bytes(raw, "big")


def _unb64(encoded: object) -> bytes:
    if not isinstance(encoded, str) or not _BASE64URL.fullmatch(encoded):
        raise ValueError("not base64url")
    return _segment_bytes(encoded)


def _segment_bytes(encoded: str) -> bytes:
    """The bytes of `encoded`, already known to hold base64url characters only."""
    # Canonical base64url only: one proof, one spelling (as for our own tokens in jws.py). A
    # last character whose unused low bits are set is another spelling of the same bytes.
    spare = len(encoded) % 4
    if spare == 1 or (spare and _BASE64URL_VALUE[encoded[-1]] & (0b1111 if spare == 2 else 0b11)):
        raise ValueError("not canonical base64url")
    # binascii directly: base64.urlsafe_b64decode is three Python calls around the same one.
    return binascii.a2b_base64(encoded.encode("ascii").translate(_TO_STANDARD_BASE64) + b"==")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _is_integer(value: object) -> TypeGuard[int]:
    # bool is a subclass of int; `"iat": true` must not pass as 1.
    return isinstance(value, int) and not isinstance(value, bool)
