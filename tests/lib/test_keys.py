"""Asymmetric access tokens: ES256 and RS256 keys, kid, JWKS, rotation, algorithm confusion."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.datastructures import Secret
from tokenrota_server.config import Settings, load_settings
from tokenrota_server.errors import ConfigError

from tests.oauth_support import claims_of, header_of
from tests.support import FakeClock, RegisterAndLogin, Serve


def private_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """A real 2048-bit RSA key, made for this test module."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """A real P-256 key, made for this test module."""
    return ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, Any],
    claims: dict[str, Any],
    signature: bytes | None = None,
    mac_key: bytes | None = None,
) -> str:
    """A token with any header; MACed with `mac_key` (HS256) or carrying `signature`."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if mac_key is not None:
        signature = hmac.new(mac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature or b'')}"


async def profile(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get("/profile", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


@pytest.mark.parametrize(("key_name", "algorithm"), [("rsa_key", "RS256"), ("ec_key", "ES256")])
async def test_access_tokens_signed_with_the_key_and_verified_by_pyjwt_through_jwks(
    request: pytest.FixtureRequest,
    make_settings: Any,
    clock: FakeClock,
    key_name: str,
    algorithm: str,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """Access tokens carry alg and kid; PyJWT verifies them with the published JWKS."""
    key = request.getfixturevalue(key_name)
    settings = make_settings(access_token_signing_key=Secret(private_pem(key)))

    async with serve(settings, clock) as client:
        user, pair = await register_and_login(client)
        key_set = (await client.get("/.well-known/jwks.json")).json()
        metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
        status = await profile(client, pair["access_token"])

    header = header_of(pair["access_token"])
    assert header["alg"] == algorithm
    assert header["typ"] == "at+jwt"
    assert [member["kid"] for member in key_set["keys"]] == [header["kid"]]
    assert "d" not in key_set["keys"][0]
    assert metadata["jwks_uri"] == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert status == 200
    assert header_of(pair["refresh_token"])["alg"] == "HS256"
    verifying_key = jwt.PyJWKSet.from_dict(key_set)[header["kid"]]
    verified = jwt.decode(
        pair["access_token"],
        verifying_key.key,
        algorithms=[algorithm],
        audience=settings.token_audience,
        issuer=settings.token_issuer,
        options={"require": ["exp", "iat", "sub"]},
    )
    assert verified["sub"] == user["id"]


async def test_algorithm_confusion_with_a_real_rsa_key_is_refused(
    make_settings: Any,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """HS256 MACed with the public key (PEM, DER, JWKS JSON), none, the old secret: all 403."""
    settings = make_settings(access_token_signing_key=Secret(private_pem(rsa_key)))
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    async with serve(settings, clock) as client:
        _, pair = await register_and_login(client)
        key_set = (await client.get("/.well-known/jwks.json")).json()
        kid = header_of(pair["access_token"])["kid"]
        claims = claims_of(pair["access_token"])
        hs256 = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
        forged = [
            forge(hs256, claims, mac_key=public_pem(rsa_key).encode()),
            forge(hs256, claims, mac_key=der),
            forge(hs256, claims, mac_key=json.dumps(key_set["keys"][0]).encode()),
            forge(hs256, claims, mac_key=str(settings.access_token_secret).encode()),
            forge(
                {"alg": "HS256", "typ": "at+jwt"},
                claims,
                mac_key=str(settings.access_token_secret).encode(),
            ),
            forge({"alg": "none", "typ": "at+jwt", "kid": kid}, claims),
            forge({"alg": "RS256", "typ": "at+jwt", "kid": kid}, claims, signature=b"\0" * 256),
            forge({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, signature=b"\0" * 64),
            forge(
                {"alg": "RS256", "typ": "at+jwt", "kid": "../../etc/passwd"},
                claims,
                signature=b"\0" * 256,
            ),
        ]
        statuses = [await profile(client, token) for token in forged]
        genuine = await profile(client, pair["access_token"])

    assert statuses == [403] * len(forged)
    assert genuine == 200


async def test_a_token_signed_by_another_key_with_our_kid_is_refused(
    make_settings: Any,
    clock: FakeClock,
    ec_key: ec.EllipticCurvePrivateKey,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """A foreign P-256 key signing a token that names our kid: 403."""
    settings = make_settings(access_token_signing_key=Secret(private_pem(ec_key)))
    stranger = ec.generate_private_key(ec.SECP256R1())

    async with serve(settings, clock) as client:
        _, pair = await register_and_login(client)
        header = header_of(pair["access_token"])
        forged = jwt.encode(
            claims_of(pair["access_token"]), stranger, algorithm="ES256", headers=header
        )
        status = await profile(client, forged)

    assert status == 403


async def test_rotation_keeps_the_previous_key_published_and_accepted(
    make_settings: Any,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    register_and_login: RegisterAndLogin,
    serve: Serve,
) -> None:
    """After a rotation, old tokens verify while the old key is listed, and not after."""
    old = make_settings(access_token_signing_key=Secret(private_pem(rsa_key)))
    rotated = make_settings(
        access_token_signing_key=Secret(private_pem(ec_key)),
        access_token_previous_keys=(public_pem(rsa_key),),
    )
    retired = make_settings(access_token_signing_key=Secret(private_pem(ec_key)))

    async with serve(old, clock) as client:
        _, pair = await register_and_login(client)
    async with serve(rotated, clock) as client:
        during = await profile(client, pair["access_token"])
        key_set = (await client.get("/.well-known/jwks.json")).json()
        _, new_pair = await register_and_login(client)
    async with serve(retired, clock) as client:
        after = await profile(client, pair["access_token"])
        new_after = await profile(client, new_pair["access_token"])

    assert during == 200
    assert {member["alg"] for member in key_set["keys"]} == {"RS256", "ES256"}
    assert header_of(new_pair["access_token"])["alg"] == "ES256"
    assert after == 403
    assert new_after == 200


def test_unusable_keys_are_refused_at_startup(tmp_path: Path, settings: Settings) -> None:
    """Weak RSA, a non-P-256 curve, garbage, a missing file: ConfigError naming no key bytes."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    p384 = ec.generate_private_key(ec.SECP384R1())
    base = {
        "ACCESS_TOKEN_SECRET": str(settings.access_token_secret),
        "REFRESH_TOKEN_SECRET": str(settings.refresh_token_secret),
    }

    for content in (private_pem(weak), private_pem(p384), "not a key"):
        path = tmp_path / "key.pem"
        path.write_text(content)
        with pytest.raises(ConfigError) as caught:
            load_settings({**base, "ACCESS_TOKEN_SIGNING_KEY": str(path)})
        assert "PRIVATE KEY" not in str(caught.value)
    with pytest.raises(ConfigError):
        load_settings({**base, "ACCESS_TOKEN_SIGNING_KEY": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError):
        load_settings({**base, "ACCESS_TOKEN_PREVIOUS_KEYS": str(tmp_path / "key.pem")})


def test_key_files_are_read_from_the_environment(
    tmp_path: Path,
    settings: Settings,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    """ACCESS_TOKEN_SIGNING_KEY and a comma-separated ACCESS_TOKEN_PREVIOUS_KEYS are loaded."""
    (tmp_path / "new.pem").write_text(private_pem(ec_key))
    (tmp_path / "old.pem").write_text(public_pem(rsa_key))

    loaded = load_settings(
        {
            "ACCESS_TOKEN_SECRET": str(settings.access_token_secret),
            "REFRESH_TOKEN_SECRET": str(settings.refresh_token_secret),
            "ACCESS_TOKEN_SIGNING_KEY": str(tmp_path / "new.pem"),
            "ACCESS_TOKEN_PREVIOUS_KEYS": f"{tmp_path / 'old.pem'}, ",
        }
    )

    assert str(loaded.access_token_signing_key) == private_pem(ec_key)
    assert loaded.access_token_previous_keys == (public_pem(rsa_key),)
    assert "PRIVATE" not in repr(loaded)
