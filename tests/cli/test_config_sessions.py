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
    "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
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


def test_mail_settings_are_read() -> None:
    """Every mail and recovery variable lands in its field; the SMTP URL stays secret."""
    settings = load_settings(
        {
            **SECRETS,
            "SMTP_URL": "smtps://mailer:S3cret-smtp-pw@mail.example:465",
            "SMTP_CA_FILE": "/etc/ssl/private-ca.pem",
            "MAIL_FROM": "Auth <auth@app.example>",
            "MAIL_POLL_INTERVAL": "2",
            "PASSWORD_RESET_TTL": "600",
            "PASSWORD_RESET_URL": "https://app.example/reset?lang=en",
            "EMAIL_VERIFICATION_TTL": "3600",
            "EMAIL_VERIFICATION_URL": "https://app.example/verify",
            "PASSWORD_FORGOT_EMAIL_MAX_ATTEMPTS": "5",
            "PASSWORD_FORGOT_IP_MAX_ATTEMPTS": "50",
            "REQUIRE_VERIFIED_EMAIL": "true",
        }
    )

    assert str(settings.smtp_url) == "smtps://mailer:S3cret-smtp-pw@mail.example:465"
    assert "S3cret-smtp-pw" not in repr(settings)
    assert str(settings.smtp_ca_file) == "/etc/ssl/private-ca.pem"
    assert (settings.mail_from, settings.mail_poll_interval) == ("Auth <auth@app.example>", 2)
    assert settings.reset_page_url == "https://app.example/reset?lang=en"
    assert settings.verification_page_url == "https://app.example/verify"
    assert (settings.password_reset_ttl, settings.email_verification_ttl) == (600, 3600)
    assert settings.password_forgot_email_max_attempts == 5
    assert settings.password_forgot_ip_max_attempts == 50
    assert settings.require_verified_email is True
    assert settings.uses_dev_mailbox is False


def test_without_urls_the_links_lead_to_the_demo() -> None:
    settings = load_settings({**SECRETS, "PUBLIC_URL": "http://127.0.0.1:8123"})

    assert settings.reset_page_url == "http://127.0.0.1:8123/demo?flow=reset"
    assert settings.verification_page_url == "http://127.0.0.1:8123/demo?flow=verify"
    assert settings.uses_dev_mailbox is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_URL", "http://mail.example"),
        ("SMTP_URL", "smtp://"),
        ("SMTP_URL", "smtp://mail.example:notaport"),
        ("SMTP_URL", "mail.example:587"),
        ("MAIL_FROM", "Auth <a@b.example>\r\nBcc: victim@example.com"),
        ("MAIL_FROM", "no address"),
        ("PASSWORD_RESET_URL", "javascript:alert(1)"),
        ("PASSWORD_RESET_URL", "https://app.example/reset#frag"),
        ("EMAIL_VERIFICATION_URL", "/verify"),
        ("PASSWORD_RESET_TTL", "0"),
        ("EMAIL_VERIFICATION_TTL", "-1"),
        ("PASSWORD_FORGOT_EMAIL_MAX_ATTEMPTS", "0"),
        ("PASSWORD_FORGOT_IP_MAX_ATTEMPTS", "0"),
        ("MAIL_POLL_INTERVAL", "-1"),
    ],
)
def test_mail_settings_are_refused_in_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({**SECRETS, name: value})

    message = str(refused.value)
    assert name in message
    assert "\n" not in message
    assert "notaport" not in message
