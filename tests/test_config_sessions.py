"""The settings of sessions and browser frontends: parsed from the environment and validated."""

from __future__ import annotations

import ipaddress
import secrets

import pytest
from tokenrota_server.config import load_settings
from tokenrota_server.errors import ConfigError

SECRETS = {
    "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
    "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
}


def test_browser_and_throttle_settings_are_read() -> None:
    """Every new variable lands in its field."""
    settings = load_settings(
        {
            **SECRETS,
            "ENV": "production",
            "TOKEN_ISSUER": "https://auth.example",
            "ALLOWED_ORIGINS": "https://app.example, https://admin.example",
            "COOKIE_SECURE": "false",
            "TRUSTED_PROXIES": "10.0.0.0/8,::1",
            "PURGE_INTERVAL": "0",
            "LOGIN_EMAIL_MAX_ATTEMPTS": "5",
            "LOGIN_IP_MAX_ATTEMPTS": "50",
            "LOGIN_THROTTLE_WINDOW": "60",
        }
    )

    assert settings.allowed_origins == ("https://app.example", "https://admin.example")
    assert settings.cookie_secure is False
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )
    assert settings.purge_interval == 0
    assert (settings.login_email_max_attempts, settings.login_ip_max_attempts) == (5, 50)
    assert settings.login_throttle_window == 60


def test_defaults_are_safe() -> None:
    """Production: no origin may use the cookie, Secure cookies, no proxy trusted."""
    settings = load_settings(
        {**SECRETS, "ENV": "production", "TOKEN_ISSUER": "https://auth.example"}
    )

    assert settings.allowed_origins == ()
    assert settings.cookie_secure is True
    assert settings.trusted_proxies == ()
    assert settings.purge_interval == 3600


def test_development_allows_its_own_local_origin() -> None:
    """`make run` then /demo works: the local address of PORT is an allowed origin."""
    settings = load_settings({**SECRETS, "PORT": "8123"})

    assert settings.allowed_origins == ("http://127.0.0.1:8123", "http://localhost:8123")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALLOWED_ORIGINS", "*"),
        ("ALLOWED_ORIGINS", "app.example"),
        ("ALLOWED_ORIGINS", "https://app.example/"),
        ("TRUSTED_PROXIES", "not-a-network"),
        ("COOKIE_SECURE", "maybe"),
        ("PURGE_INTERVAL", "-1"),
        ("LOGIN_EMAIL_MAX_ATTEMPTS", "0"),
        ("LOGIN_THROTTLE_WINDOW", "soon"),
    ],
)
def test_bad_values_are_refused_with_a_reason(name: str, value: str) -> None:
    """Each bad value stops the service with a one-line error naming the variable."""
    with pytest.raises(ConfigError, match=name):
        load_settings({**SECRETS, name: value})
