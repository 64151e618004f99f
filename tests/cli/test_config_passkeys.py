"""The passkey settings: WEBAUTHN_RP_ID's and WEBAUTHN_ORIGINS' grammar, and the origins used
when WEBAUTHN_ORIGINS is unset."""

from __future__ import annotations

import secrets

import pytest
from tokenrota_server.config import load_settings
from tokenrota_server.errors import ConfigError

SECRETS = {
    "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
    "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
}


def test_development_uses_localhost_and_its_own_local_page() -> None:
    """Unset: RP id localhost, and of the development ALLOWED_ORIGINS the localhost one (the
    127.0.0.1 one can never use an RP id of localhost)."""
    settings = load_settings({**SECRETS, "PORT": "8000"})

    assert settings.webauthn_rp_id == "localhost"
    assert settings.passkey_origins == ("http://localhost:8000",)


def test_unset_origins_are_the_allowed_origins_under_the_rp_id() -> None:
    """An app on a subdomain of the RP id counts; another site and plain http do not."""
    settings = load_settings(
        {
            **SECRETS,
            "WEBAUTHN_RP_ID": "example.com",
            "ALLOWED_ORIGINS": "https://app.example.com,https://example.com,"
            "https://other.example,http://insecure.example.com,https://notexample.com",
        }
    )

    assert settings.passkey_origins == ("https://app.example.com", "https://example.com")


@pytest.mark.parametrize(
    "rp_id",
    ["", "Example.com", "https://example.com", "example.com/", "exa mple.com", "a..b", "é.example"],
)
def test_an_rp_id_that_is_no_lowercase_domain_is_refused(rp_id: str) -> None:
    with pytest.raises(ConfigError, match="WEBAUTHN_RP_ID") as refused:
        load_settings({**SECRETS, "WEBAUTHN_RP_ID": rp_id or " "})

    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.org",  # another site
        "https://badexample.com",  # ends in the RP id, but not at a label
        "http://app.example.com",  # plain http beyond localhost
        "https://app.example.com/",  # a path
        "https://app.example.com/login",
        "https://user@app.example.com",
        "app.example.com",
    ],
)
def test_an_origin_that_could_never_use_the_rp_id_is_refused(origin: str) -> None:
    with pytest.raises(ConfigError, match="WEBAUTHN_ORIGINS"):
        load_settings({**SECRETS, "WEBAUTHN_RP_ID": "example.com", "WEBAUTHN_ORIGINS": origin})


def test_explicit_origins_are_used_as_given() -> None:
    settings = load_settings(
        {
            **SECRETS,
            "WEBAUTHN_RP_ID": "example.com",
            "WEBAUTHN_ORIGINS": "https://example.com,https://login.example.com:8443",
        }
    )

    assert settings.passkey_origins == ("https://example.com", "https://login.example.com:8443")
