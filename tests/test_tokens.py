"""tokenrota_server/tokens.py and the jws.py checks under it, on their own: every forged,
malformed or misused token is refused.

Each attack is a valid token (built by hand, see tests/forge.py) with exactly one thing changed;
`test_the_unaltered_forgery_verifies` shows the baseline itself passes, so each refusal below is
caused by its one change.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.datastructures import Secret
from tokenrota import jws
from tokenrota_server.config import Settings
from tokenrota_server.errors import ConfigError, InvalidToken, TokenExpired
from tokenrota_server.tokens import TokenCodec

from tests import forge
from tests.forge import ACCESS_HEADER, REFRESH_HEADER, REMOVE

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())


@pytest.fixture
def unit_settings() -> Settings:
    """Settings with fresh random secrets; no database needed for pure token code."""
    return Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        env="test",
    )


@pytest.fixture
def codec(unit_settings: Settings) -> TokenCodec:
    return TokenCodec(unit_settings)


def access_token(settings: Settings, **changes: Any) -> str:
    """A hand-made access token under the real access secret, with `changes` to its claims."""
    return forge.token(forge.access_claims(settings, T, **changes), forge.access_secret(settings))


def refresh_token(settings: Settings, **changes: Any) -> str:
    return forge.token(
        forge.refresh_claims(settings, T, **changes),
        forge.refresh_secret(settings),
        header=REFRESH_HEADER,
    )


def assert_refused(verify: Callable[[str, datetime], Any], token: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        verify(token, NOW)
    # token_expired is a subclass: the reasons below must not be mistaken for expiry.
    assert type(refused.value) is InvalidToken


# -- the baseline ------------------------------------------------------------------------------


def test_the_unaltered_forgery_verifies(unit_settings: Settings, codec: TokenCodec) -> None:
    """A hand-built valid token passes: each attack below differs from it in one thing."""
    claims = codec.verify_access(access_token(unit_settings, sub="u", sid="s"), NOW)
    assert (claims.subject, claims.session_id) == ("u", "s")
    assert codec.verify_refresh(refresh_token(unit_settings, sub="u"), NOW).subject == "u"


def test_minted_tokens_round_trip(codec: TokenCodec) -> None:
    """What the codec mints, it verifies; each kind under its own header type."""
    token, _ = codec.mint_access(subject="u", session_id="s", email="e@x.io", now=NOW)
    refresh = codec.mint_refresh(codec.new_refresh_claims(subject="u", session_id="s", now=NOW))

    assert codec.verify_access(token, NOW).email == "e@x.io"
    assert codec.verify_refresh(refresh, NOW).session_id == "s"
    assert forge.decode_segment(token.split(".")[0]) == ACCESS_HEADER
    assert forge.decode_segment(refresh.split(".")[0]) == REFRESH_HEADER


# -- the algorithm ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alg",
    ["none", "None", "NONE", "HS384", "HS512", "RS256", "ES256", "hs256", "", None, ["HS256"], 256],
)
def test_any_other_alg_header_is_refused_even_with_a_real_hs256_mac(
    unit_settings: Settings, codec: TokenCodec, alg: Any
) -> None:
    """The algorithm is pinned by us: the header's alg must be exactly HS256."""
    claims = forge.access_claims(unit_settings, T)
    header = {"alg": alg, "typ": "at+jwt"}

    assert_refused(
        codec.verify_access, forge.token(claims, forge.access_secret(unit_settings), header=header)
    )


def test_a_missing_alg_header_is_refused(unit_settings: Settings, codec: TokenCodec) -> None:
    claims = forge.access_claims(unit_settings, T)
    token = forge.token(claims, forge.access_secret(unit_settings), header={"typ": "at+jwt"})

    assert_refused(codec.verify_access, token)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_stronger_hmacs_with_the_real_secret_are_refused(
    unit_settings: Settings, codec: TokenCodec, alg: str
) -> None:
    """The key is bound to HS256: HS384/HS512 under the very same secret do not pass."""
    claims = forge.access_claims(unit_settings, T)
    header = {"alg": alg, "typ": "at+jwt"}
    token = forge.token(claims, forge.access_secret(unit_settings), header=header, alg=alg)

    assert_refused(codec.verify_access, token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("signature", ["", "AAAA", "bnVsbA"])
def test_unsigned_tokens_are_refused(
    unit_settings: Settings, codec: TokenCodec, alg: str, signature: str
) -> None:
    """`alg: none`, with an empty, a bogus or no third segment at all."""
    header = forge.b64(forge.encode_json({"alg": alg, "typ": "at+jwt"}))
    payload = forge.b64(forge.encode_json(forge.access_claims(unit_settings, T)))

    assert_refused(codec.verify_access, f"{header}.{payload}.{signature}")
    assert_refused(codec.verify_access, f"{header}.{payload}")


def test_hs256_maced_with_an_rsa_public_key_is_refused(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    """The algorithm-confusion trap: an RSA public key (DER or PEM) used as the HMAC secret."""
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = forge.access_claims(unit_settings, T)

    for key in (der, pem):
        assert_refused(codec.verify_access, forge.token(claims, key))


# -- the signature ---------------------------------------------------------------------------


def _with_signature(token: str, signature: str) -> str:
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize(
    "make_signature",
    [
        pytest.param(lambda real, _: "", id="empty"),
        pytest.param(lambda real, _: forge.b64(secrets.token_bytes(32)), id="random"),
        pytest.param(lambda real, _: real[:-4], id="truncated"),
        pytest.param(lambda real, _: real[: len(real) // 2], id="half"),
        pytest.param(lambda real, _: real + real, id="doubled"),
        pytest.param(lambda real, _: forge.b64(bytes(32)), id="zeros"),
        pytest.param(lambda real, _: "null", id="null"),
        pytest.param(
            lambda real, signing_input: forge.b64(forge.mac(b"", signing_input)), id="blank-secret"
        ),
        pytest.param(
            lambda real, signing_input: forge.b64(
                forge.mac(secrets.token_urlsafe(48), signing_input)
            ),
            id="foreign-secret",
        ),
    ],
)
def test_bad_signatures_are_refused(
    unit_settings: Settings, codec: TokenCodec, make_signature: Callable[[str, str], str]
) -> None:
    token = access_token(unit_settings)
    header, payload, real = token.split(".")

    forged = _with_signature(token, make_signature(real, f"{header}.{payload}"))

    assert forged != token
    assert_refused(codec.verify_access, forged)


def test_one_flipped_payload_character_breaks_the_mac(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    header, payload, signature = access_token(unit_settings).split(".")
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]

    assert_refused(codec.verify_access, f"{header}.{flipped}.{signature}")


WEAK_SECRETS = [
    "",
    "secret",
    "Secret",
    "password",
    "changeme",
    "change-me",
    "jwt-secret",
    "your-256-bit-secret",
    "token-service",
    "access_token_secret",
    "ACCESS_TOKEN_SECRET",
    "development",
    "test",
    "123456",
    "qwerty",
    "s3cr3t",
    "supersecret",
    "secretkey",
    "0" * 31,
    "a" * 31,
]


@pytest.mark.parametrize("weak", WEAK_SECRETS)
def test_weak_secrets_are_refused_and_do_not_verify_a_real_token(
    unit_settings: Settings, weak: str
) -> None:
    """No dictionary word can be configured, and none reproduces a real token's MAC."""
    with pytest.raises(ConfigError):
        replace(unit_settings, access_token_secret=Secret(weak))
    with pytest.raises(ConfigError):
        replace(unit_settings, refresh_token_secret=Secret(weak))
    header, payload, signature = access_token(unit_settings).split(".")

    assert forge.b64(forge.mac(weak, f"{header}.{payload}")) != signature


# -- headers that name keys ------------------------------------------------------------------


INJECTIONS = [
    "' OR '1'='1",
    "../../../../dev/null",
    "/etc/passwd",
    "$(touch /tmp/pwned)",
    "`id`",
    "http://127.0.0.1:{port}/keys.json",
]


async def test_key_naming_headers_are_ignored_and_nothing_is_fetched(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    """kid, jku, x5u and jwk never choose the key: with a foreign key the token fails, with the
    real key it passes, and no request reaches the URL they name."""
    connections: list[object] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(object())
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    foreign = secrets.token_urlsafe(48)
    try:
        for value in (injection.format(port=port) for injection in INJECTIONS):
            header = {
                "alg": "HS256",
                "typ": "at+jwt",
                "kid": value,
                "jku": value,
                "x5u": value,
                "jwk": {"kty": "oct", "k": forge.b64(foreign.encode()), "kid": value},
            }
            claims = forge.access_claims(unit_settings, T)
            real = forge.token(claims, forge.access_secret(unit_settings), header=header)
            forged = forge.token(claims, foreign, header=header)

            assert codec.verify_access(real, NOW).jti == claims["jti"]
            assert_refused(codec.verify_access, forged)
        await asyncio.sleep(0.05)
    finally:
        server.close()
        await server.wait_closed()

    assert connections == []


# -- the claims ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claim", ["iss", "aud", "sub", "sid", "iat", "exp", "jti", "email", "scope"]
)
def test_each_required_access_claim_is_required(
    unit_settings: Settings, codec: TokenCodec, claim: str
) -> None:
    assert_refused(codec.verify_access, access_token(unit_settings, **{claim: REMOVE}))


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "sid", "iat", "exp", "jti", "typ"])
def test_each_required_refresh_claim_is_required(
    unit_settings: Settings, codec: TokenCodec, claim: str
) -> None:
    assert_refused(codec.verify_refresh, refresh_token(unit_settings, **{claim: REMOVE}))


WRONG_TYPES: list[tuple[str, Any]] = [
    ("exp", str(T + 600)),
    ("exp", "9999999999"),
    ("exp", 1e20),
    ("exp", float(T + 600)),
    ("exp", True),
    ("exp", [T + 600]),
    ("exp", {"t": T + 600}),
    ("exp", None),
    ("exp", 10**40),
    ("iat", str(T)),
    ("iat", float(T)),
    ("iat", True),
    ("iat", None),
    ("iat", [T]),
    ("nbf", str(T)),
    ("nbf", float(T)),
    ("nbf", [T]),
    ("sub", 123),
    ("sub", ""),
    ("sub", None),
    ("sub", ["u"]),
    ("jti", 123),
    ("jti", ""),
    ("sid", 123),
    ("sid", None),
    ("email", 1),
    ("scope", None),
    ("scope", ["read"]),
    ("iss", None),
    ("aud", None),
]


@pytest.mark.parametrize(("claim", "value"), WRONG_TYPES, ids=repr)
def test_claims_of_the_wrong_type_are_refused(
    unit_settings: Settings, codec: TokenCodec, claim: str, value: Any
) -> None:
    assert_refused(codec.verify_access, access_token(unit_settings, **{claim: value}))


@pytest.mark.parametrize(
    ("claim", "value"),
    [c for c in WRONG_TYPES if c[0] not in ("email", "scope")] + [("typ", None), ("typ", 1)],
    ids=repr,
)
def test_refresh_claims_of_the_wrong_type_are_refused(
    unit_settings: Settings, codec: TokenCodec, claim: str, value: Any
) -> None:
    assert_refused(codec.verify_refresh, refresh_token(unit_settings, **{claim: value}))


@pytest.mark.parametrize(
    ("claim", "raw"),
    [("exp", "NaN"), ("exp", "Infinity"), ("exp", "-Infinity"), ("exp", "1" * 5000)],
)
def test_non_json_numbers_in_signed_claims_are_refused(
    unit_settings: Settings, codec: TokenCodec, claim: str, raw: str
) -> None:
    """NaN, Infinity and integers too long to convert: refused, not a crash."""
    claims = forge.access_claims(unit_settings, T)
    text = json.dumps(claims).replace(f'"{claim}": {claims[claim]}', f'"{claim}": {raw}')
    assert raw in text
    token = forge.token(None, forge.access_secret(unit_settings), raw_claims=text.encode())

    assert_refused(codec.verify_access, token)


# -- time ------------------------------------------------------------------------------------


def test_an_expired_token_is_token_expired(unit_settings: Settings, codec: TokenCodec) -> None:
    """Past exp by more than the leeway: the one reason with its own code."""
    ttl, leeway = unit_settings.access_token_ttl, unit_settings.jwt_leeway
    iat = T - ttl - leeway - 1

    with pytest.raises(TokenExpired):
        codec.verify_access(access_token(unit_settings, iat=iat, exp=iat + ttl), NOW)


def test_exp_equal_to_now_is_expired_without_leeway(unit_settings: Settings) -> None:
    codec = TokenCodec(replace(unit_settings, jwt_leeway=0))
    ttl = unit_settings.access_token_ttl

    with pytest.raises(TokenExpired):
        codec.verify_access(access_token(unit_settings, iat=T - ttl, exp=T), NOW)
    assert codec.verify_access(access_token(unit_settings, iat=T - ttl + 1, exp=T + 1), NOW)


def test_the_leeway_tolerates_small_clock_skew_only(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    """Within the leeway exp, iat and nbf pass; one second beyond it they do not."""
    ttl, leeway = unit_settings.access_token_ttl, unit_settings.jwt_leeway

    assert codec.verify_access(access_token(unit_settings, iat=T - ttl, exp=T), NOW)
    assert codec.verify_access(
        access_token(unit_settings, iat=T + leeway, exp=T + leeway + 60), NOW
    )
    assert codec.verify_access(access_token(unit_settings, nbf=T + leeway), NOW)
    with pytest.raises(TokenExpired):
        codec.verify_access(access_token(unit_settings, iat=T - ttl - leeway, exp=T - leeway), NOW)
    assert_refused(
        codec.verify_access, access_token(unit_settings, iat=T + leeway + 1, exp=T + leeway + 61)
    )
    assert_refused(codec.verify_access, access_token(unit_settings, nbf=T + leeway + 1))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iat": T + 3600, "exp": T + 3600 + 600}, id="iat-in-the-future"),
        pytest.param({"nbf": T + 3600}, id="nbf-in-the-future"),
        pytest.param({"exp": T + 15 * 60 + 1}, id="lives-longer-than-15-minutes"),
        pytest.param({"iat": 0, "exp": T + 600}, id="issued-in-1970"),
        pytest.param({"exp": T}, id="exp-equal-to-iat"),
        pytest.param({"exp": T - 1}, id="exp-before-iat"),
    ],
)
def test_impossible_times_are_refused(
    unit_settings: Settings, codec: TokenCodec, changes: dict[str, int]
) -> None:
    assert_refused(codec.verify_access, access_token(unit_settings, **changes))


def test_a_refresh_token_may_not_live_longer_than_its_kind(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    ttl = unit_settings.refresh_token_ttl

    assert codec.verify_refresh(refresh_token(unit_settings, exp=T + ttl), NOW)
    assert_refused(codec.verify_refresh, refresh_token(unit_settings, exp=T + ttl + 1))


def test_an_expired_refresh_token_is_plain_invalid_token(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    """/refresh answers every refusal alike; expiry is not told apart there."""
    ttl, leeway = unit_settings.refresh_token_ttl, unit_settings.jwt_leeway
    iat = T - ttl - leeway - 1

    assert_refused(codec.verify_refresh, refresh_token(unit_settings, iat=iat, exp=iat + ttl))


# -- issuer, audience, type ------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "someone-else"},
        {"iss": "token-service "},
        {"iss": "TOKEN-SERVICE"},
        {"aud": "another-service"},
        {"aud": ["token-service"]},
        {"aud": ["token-service", "other"]},
        {"aud": ""},
    ],
    ids=repr,
)
def test_a_wrong_issuer_or_audience_is_refused(
    unit_settings: Settings, codec: TokenCodec, changes: dict[str, Any]
) -> None:
    assert_refused(codec.verify_access, access_token(unit_settings, **changes))
    assert_refused(codec.verify_refresh, refresh_token(unit_settings, **changes))


def test_a_token_of_another_issuer_configuration_is_refused(unit_settings: Settings) -> None:
    """Same secrets, other TOKEN_ISSUER/TOKEN_AUDIENCE: the tokens do not cross over."""
    other = TokenCodec(replace(unit_settings, token_issuer="staging", token_audience="staging"))

    assert_refused(other.verify_access, access_token(unit_settings))


def test_refresh_tokens_are_not_access_tokens_and_vice_versa(codec: TokenCodec) -> None:
    access, _ = codec.mint_access(subject="u", session_id="s", email="e@x.io", now=NOW)
    refresh = codec.mint_refresh(codec.new_refresh_claims(subject="u", session_id="s", now=NOW))

    assert_refused(codec.verify_access, refresh)
    assert_refused(codec.verify_refresh, access)


@pytest.mark.parametrize(
    ("header", "key_of", "claims_of"),
    [
        pytest.param(ACCESS_HEADER, forge.refresh_secret, "access", id="access-claims-refresh-key"),
        pytest.param(
            REFRESH_HEADER, forge.access_secret, "refresh", id="refresh-claims-access-key"
        ),
        pytest.param(ACCESS_HEADER, forge.access_secret, "refresh", id="refresh-claims-access-typ"),
        pytest.param(
            REFRESH_HEADER, forge.refresh_secret, "access", id="access-claims-refresh-typ"
        ),
    ],
)
def test_crossed_kinds_are_refused(
    unit_settings: Settings,
    codec: TokenCodec,
    header: dict[str, str],
    key_of: Callable[[Settings], str],
    claims_of: str,
) -> None:
    """Each secret signs one kind, each kind carries its own header type and claims."""
    make = forge.access_claims if claims_of == "access" else forge.refresh_claims
    token = forge.token(make(unit_settings, T), key_of(unit_settings), header=header)

    assert_refused(codec.verify_access, token)
    assert_refused(codec.verify_refresh, token)


@pytest.mark.parametrize(
    "typ", ["JWT", "jwt", "AT+JWT", "application/at+jwt", "refresh+jwt", "", None, REMOVE]
)
def test_a_wrong_access_header_type_is_refused(
    unit_settings: Settings, codec: TokenCodec, typ: Any
) -> None:
    header = {"alg": "HS256"} if typ is REMOVE else {"alg": "HS256", "typ": typ}
    token = forge.token(
        forge.access_claims(unit_settings, T), forge.access_secret(unit_settings), header=header
    )

    assert_refused(codec.verify_access, token)


def test_an_access_token_with_a_typ_claim_is_refused(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    assert_refused(codec.verify_access, access_token(unit_settings, typ="refresh"))


def test_a_refresh_token_with_another_typ_claim_is_refused(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    assert_refused(codec.verify_refresh, refresh_token(unit_settings, typ="access"))


# -- the encoding ----------------------------------------------------------------------------


def _variants(token: str) -> dict[str, str]:
    header, payload, signature = token.split(".")
    # The signature's last character carries 2 unused bits: another letter, same bytes.
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(last)
    sibling = alphabet[index ^ 1]
    standard = signature.replace("-", "+").replace("_", "/")
    return {
        "padded-signature": f"{token}=",
        "padded-signature-twice": f"{token}==",
        "padded-header": f"{header}=.{payload}.{signature}",
        "padded-payload": f"{header}.{payload}=.{signature}",
        "stray-bits": f"{header}.{payload}.{signature[:-1]}{sibling}",
        "standard-alphabet": f"{header}.{payload}.{standard}",
        "leading-space": f" {token}",
        "trailing-space": f"{token} ",
        "trailing-newline": f"{token}\n",
        "inner-space": f"{header}. {payload}.{signature}",
        "tab": f"{header}.{payload}\t.{signature}",
        "two-segments": f"{header}.{payload}",
        "four-segments": f"{token}.{signature}",
        "five-segments": f"{token}.{payload}.{signature}",
        "empty-header": f".{payload}.{signature}",
        "empty": "",
        "dots": "..",
        "percent": f"{header}.{payload}.{signature[:-1]}%3D",
        "unicode": f"{header}.{payload}.{signature[:-1]}é",
        "nul": f"{header}.{payload}.{signature}\x00",
    }


@pytest.mark.parametrize("variant", list(_variants("a.b.cc")))
def test_non_canonical_spellings_of_a_valid_token_are_refused(
    unit_settings: Settings, codec: TokenCodec, variant: str
) -> None:
    """One token has one spelling: padding, stray bits, other alphabets, whitespace all fail."""
    token = access_token(unit_settings)
    while not {"-", "_"} & set(token.split(".")[2]):
        token = access_token(unit_settings)  # so that the standard alphabet spells it otherwise
    assert codec.verify_access(token, NOW)
    forged = _variants(token)[variant]

    assert forged != token
    assert_refused(codec.verify_access, forged)


@pytest.mark.parametrize("size", [8 * 1024, 100 * 1024, 1024 * 1024])
def test_oversized_tokens_are_refused_before_decoding(
    unit_settings: Settings, codec: TokenCodec, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A validly signed token of 8 KB, 100 KB or 1 MB is refused on its length alone."""
    padding = "x" * size
    token = access_token(unit_settings, padding=padding)
    assert len(token) > size
    decoded: list[bytes] = []
    real_decode = jws.base64url_decode
    monkeypatch.setattr(
        jws, "base64url_decode", lambda data: decoded.append(data) or real_decode(data)
    )

    assert_refused(codec.verify_access, token)
    assert decoded == []
    assert codec.verify_access(access_token(unit_settings), NOW)
    assert decoded != []


@pytest.mark.parametrize(
    "raw_header",
    [
        pytest.param(b'{"alg":"HS256","typ":"at+jwt"\xff}', id="invalid-utf8"),
        pytest.param(b'\xef\xbb\xbf{"alg":"HS256","typ":"at+jwt"}', id="utf8-bom"),
        pytest.param(json.dumps(ACCESS_HEADER).encode("utf-16"), id="utf-16"),
        pytest.param(json.dumps(ACCESS_HEADER).encode("utf-32"), id="utf-32"),
        pytest.param(b"\x00", id="nul"),
        pytest.param(b"[]", id="list"),
        pytest.param(b'"HS256"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{" * 1500, id="deep"),
    ],
)
def test_headers_that_are_not_a_utf8_json_object_are_refused(
    unit_settings: Settings, codec: TokenCodec, raw_header: bytes
) -> None:
    """Even under the real secret: RFC 7515 headers are UTF-8 JSON objects."""
    claims = forge.access_claims(unit_settings, T)
    token = forge.token(claims, forge.access_secret(unit_settings), raw_header=raw_header)

    assert_refused(codec.verify_access, token)


@pytest.mark.parametrize(
    "raw_claims",
    [
        pytest.param(b"[]", id="list"),
        pytest.param(b'"claims"', id="string"),
        pytest.param(b"1", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="true"),
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="garbage"),
        pytest.param(b'{"sub":"u"\xff}', id="invalid-utf8"),
        pytest.param(b"[" * 1500 + b"]" * 1500, id="deep"),
    ],
)
def test_claims_that_are_not_a_json_object_are_refused(
    unit_settings: Settings, codec: TokenCodec, raw_claims: bytes
) -> None:
    token = forge.token(None, forge.access_secret(unit_settings), raw_claims=raw_claims)

    assert_refused(codec.verify_access, token)
    refresh = forge.token(
        None, forge.refresh_secret(unit_settings), header=REFRESH_HEADER, raw_claims=raw_claims
    )
    assert_refused(codec.verify_refresh, refresh)


def test_utf16_claims_under_the_real_secret_are_refused(
    unit_settings: Settings, codec: TokenCodec
) -> None:
    raw = json.dumps(forge.access_claims(unit_settings, T)).encode("utf-16")
    token = forge.token(None, forge.access_secret(unit_settings), raw_claims=raw)

    assert_refused(codec.verify_access, token)
