"""Settings at start-up: production refuses weak secrets; development makes strong ones."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from starlette.datastructures import Secret
from tokenrota_server.config import Settings, ensure_development_secrets, load_settings
from tokenrota_server.errors import ConfigError

from tests.support import PROJECT_ROOT

STRONG_A = secrets.token_urlsafe(48)
STRONG_B = secrets.token_urlsafe(48)
STRONG_C = secrets.token_urlsafe(48)
SHORT = "Sh0rt-but-not-empty-31-bytes-xx"  # 31 bytes
assert len(SHORT.encode()) == 31

PRODUCTION_REFUSALS = [
    pytest.param({}, id="no-secrets"),
    pytest.param({"ACCESS_TOKEN_SECRET": STRONG_A}, id="no-refresh-secret"),
    pytest.param({"REFRESH_TOKEN_SECRET": STRONG_B}, id="no-access-secret"),
    pytest.param({"ACCESS_TOKEN_SECRET": "", "REFRESH_TOKEN_SECRET": ""}, id="empty"),
    pytest.param(
        {"ACCESS_TOKEN_SECRET": SHORT, "REFRESH_TOKEN_SECRET": STRONG_B}, id="short-access"
    ),
    pytest.param(
        {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": SHORT}, id="short-refresh"
    ),
    pytest.param({"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_A}, id="equal"),
    pytest.param(
        {"ACCESS_TOKEN_SECRET": "a" * 64, "REFRESH_TOKEN_SECRET": STRONG_B}, id="one-letter"
    ),
    pytest.param(
        {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": "password" * 4}, id="pattern"
    ),
    pytest.param(
        {"ACCESS_TOKEN_SECRET": "é" * 15, "REFRESH_TOKEN_SECRET": STRONG_B}, id="30-bytes-utf8"
    ),
]


def assert_one_line_without_secrets(message: str, environ: dict[str, str]) -> None:
    assert message.strip(), "a reason must be given"
    assert "\n" not in message.strip(), message
    for name in ("ACCESS_TOKEN_SECRET", "REFRESH_TOKEN_SECRET"):
        value = environ.get(name)
        if value:
            assert value not in message, "the secret itself was printed"


@pytest.mark.parametrize("environ", PRODUCTION_REFUSALS)
def test_production_refuses_missing_short_weak_or_equal_secrets(environ: dict[str, str]) -> None:
    environ = {"ENV": "production", "DATABASE_URL": "postgresql:///x", **environ}

    with pytest.raises(ConfigError) as refused:
        load_settings(environ)

    assert_one_line_without_secrets(str(refused.value), environ)


def test_production_accepts_two_distinct_strong_secrets() -> None:
    settings = load_settings(
        {
            "ENV": "production",
            "ACCESS_TOKEN_SECRET": STRONG_A,
            "REFRESH_TOKEN_SECRET": STRONG_B,
            "MFA_ENCRYPTION_KEY": STRONG_C,
            "TOKEN_ISSUER": "https://auth.example",
        }
    )

    assert settings.is_production
    assert STRONG_A not in repr(settings)
    assert STRONG_B not in repr(settings)


def test_a_random_hex_secret_of_32_bytes_is_accepted() -> None:
    """`openssl rand -hex 32`, the usual recipe, must pass the pattern check."""
    for _ in range(200):
        load_settings(
            {
                "ACCESS_TOKEN_SECRET": secrets.token_hex(16),
                "REFRESH_TOKEN_SECRET": secrets.token_hex(16),
            }
        )


def test_unset_variables_leave_every_field_at_its_one_default() -> None:
    """Each field has a parser for its variable, and the loader adds no default of its own."""
    environ = {"ENV": "test", "ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_B}

    loaded = load_settings({**environ, "HOST": "", "PORT": ""})

    built = Settings(access_token_secret=Secret(STRONG_A), refresh_token_secret=Secret(STRONG_B))
    for setting in fields(Settings):
        assert callable(setting.metadata["parse"]), setting.name
        if setting.name in ("access_token_secret", "refresh_token_secret"):
            assert str(getattr(loaded, setting.name)) == str(getattr(built, setting.name))
        elif setting.name != "env":
            assert getattr(loaded, setting.name) == getattr(built, setting.name), setting.name


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "eighty"), ("ACCESS_TOKEN_TTL", "0"), ("JWT_LEEWAY", "-1"), ("ENV", "prod")],
)
def test_bad_settings_are_refused_with_a_one_line_reason(name: str, value: str) -> None:
    environ = {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_B, name: value}

    with pytest.raises(ConfigError) as refused:
        load_settings(environ)

    assert_one_line_without_secrets(str(refused.value), environ)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"ADMIN_AUDIENCE": "/admin"}, "ADMIN_AUDIENCE must be an absolute URI"),
        ({"ADMIN_AUDIENCE": "https://auth.example/admin#x"}, "ADMIN_AUDIENCE must be"),
        (
            {"ADMIN_AUDIENCE": "https://auth.example/", "TOKEN_AUDIENCE": "https://auth.example/"},
            "ADMIN_AUDIENCE must differ from TOKEN_AUDIENCE",
        ),
        ({"ADMIN_MAX_AUTH_AGE": "0"}, "ADMIN_MAX_AUTH_AGE must be a positive number"),
    ],
)
def test_the_admin_apis_audience_and_auth_age_are_checked(
    changes: dict[str, str], says: str
) -> None:
    environ = {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_B, **changes}

    with pytest.raises(ConfigError, match=says):
        load_settings(environ)


def test_the_admin_apis_audience_defaults_to_the_issuer_or_public_url_plus_admin() -> None:
    base = {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_B}

    by_issuer = load_settings({**base, "TOKEN_ISSUER": "https://auth.example.com/"})
    by_public_url = load_settings({**base, "PUBLIC_URL": "https://id.example.com/auth"})
    named = load_settings({**base, "ADMIN_AUDIENCE": "urn:example:admin"})

    assert by_issuer.admin_api_audience == "https://auth.example.com/admin"
    assert by_public_url.admin_api_audience == "https://id.example.com/auth/admin"
    assert named.admin_api_audience == "urn:example:admin"
    assert named.admin_max_auth_age == 43200


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app:S3cret-db-pw@db/tokens",
        "sqlite:///tokens.db",
        "postgresql+asyncpg://db/x",
        "db",
    ],
)
def test_a_database_url_that_is_not_postgresql_is_refused_naming_the_schemes(url: str) -> None:
    environ = {
        "ACCESS_TOKEN_SECRET": STRONG_A,
        "REFRESH_TOKEN_SECRET": STRONG_B,
        "MFA_ENCRYPTION_KEY": STRONG_C,
        "DATABASE_URL": url,
    }

    with pytest.raises(ConfigError) as refused:
        load_settings(environ)

    message = str(refused.value)
    assert "postgresql:// or postgres://" in message
    assert "S3cret-db-pw" not in message
    assert_one_line_without_secrets(message, environ)


def test_the_pooler_and_direct_url_settings_are_checked() -> None:
    """DATABASE_POOLER is `none` or `transaction`; DATABASE_DIRECT_URL must be PostgreSQL's."""
    environ = {
        "ACCESS_TOKEN_SECRET": STRONG_A,
        "REFRESH_TOKEN_SECRET": STRONG_B,
        "MFA_ENCRYPTION_KEY": STRONG_C,
    }
    direct = "postgresql://app@db:5432/tokens"

    pooled = load_settings(
        {**environ, "DATABASE_POOLER": "transaction", "DATABASE_DIRECT_URL": direct}
    )
    with pytest.raises(ConfigError) as unknown_pooler:
        load_settings({**environ, "DATABASE_POOLER": "session"})
    with pytest.raises(ConfigError) as bad_direct_url:
        load_settings({**environ, "DATABASE_DIRECT_URL": "mysql://app:S3cret-db-pw@db/tokens"})

    assert pooled.session_database_url == direct
    assert load_settings({**environ, "DATABASE_URL": direct}).session_database_url == direct
    assert "DATABASE_POOLER must be one of none, transaction" in str(unknown_pooler.value)
    assert "DATABASE_DIRECT_URL must start with" in str(bad_direct_url.value)
    assert "S3cret-db-pw" not in str(bad_direct_url.value)


# The settings in seconds, whole or decimal.
SECONDS = (
    "DATABASE_CONNECT_TIMEOUT",
    "HEADER_READ_TIMEOUT",
    "BODY_READ_TIMEOUT",
    "REVOCATION_POLL_INTERVAL",
)


@pytest.mark.parametrize("name", [*SECONDS, "PURGE_INTERVAL"])
@pytest.mark.parametrize(
    ("raw", "seconds"), [("7", 7.0), ("0.25", 0.25), (" 2.5 ", 2.5), ("0.001", 0.001)]
)
def test_a_setting_in_seconds_is_whole_or_decimal(name: str, raw: str, seconds: float) -> None:
    environ = {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_B, name: raw}

    assert getattr(load_settings(environ), name.lower()) == seconds


def test_the_database_connect_timeout_defaults_to_5_seconds() -> None:
    environ = {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_B}

    assert load_settings(environ).database_connect_timeout == 5
    assert load_settings({**environ, "DATABASE_CONNECT_TIMEOUT": ""}).database_connect_timeout == 5


@pytest.mark.parametrize("name", SECONDS)
@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("0", "must be a positive number of seconds"),
        ("0.0", "must be a positive number of seconds"),
        ("-1", "must be a number of seconds, such as 5 or 0.5"),
        (".5", "must be a number of seconds, such as 5 or 0.5"),
        ("1e3", "must be a number of seconds, such as 5 or 0.5"),
        ("inf", "must be a number of seconds, such as 5 or 0.5"),
        ("nan", "must be a number of seconds, such as 5 or 0.5"),
        ("5s", "must be a number of seconds, such as 5 or 0.5"),
        ("1_0", "must be a number of seconds, such as 5 or 0.5"),
    ],
)
def test_a_setting_in_seconds_that_is_not_positive_is_refused(
    name: str, raw: str, says: str
) -> None:
    environ = {"ACCESS_TOKEN_SECRET": STRONG_A, "REFRESH_TOKEN_SECRET": STRONG_B, name: raw}

    with pytest.raises(ConfigError) as refused:
        load_settings(environ)

    assert str(refused.value) == f"{name} {says}"


def run_cli(
    *arguments: str, environ: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`tokenrota ...` in a clean environment (only PATH and what is given)."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tokenrota_server", *arguments],
        cwd=PROJECT_ROOT,
        env={"PATH": os.environ.get("PATH", ""), **environ},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("environ", PRODUCTION_REFUSALS[:1] + PRODUCTION_REFUSALS[4:7])
def test_serve_in_production_exits_with_one_line_and_no_secret(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    environ = {"ENV": "production", "DATA_DIR": str(tmp_path), **environ}

    result = run_cli("serve", environ=environ)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert_one_line_without_secrets(result.stderr, environ)
    assert list(tmp_path.iterdir()) == [], "production must not generate secrets"


def test_serve_in_production_needs_a_database_url(tmp_path: Path) -> None:
    """Production never falls back to the embedded Postgres."""
    environ = {
        "ENV": "production",
        "DATA_DIR": str(tmp_path),
        "ACCESS_TOKEN_SECRET": STRONG_A,
        "REFRESH_TOKEN_SECRET": STRONG_B,
        "MFA_ENCRYPTION_KEY": STRONG_C,
        "TOKEN_ISSUER": "https://auth.example",
    }

    result = run_cli("serve", environ=environ)

    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert_one_line_without_secrets(result.stderr, environ)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["mysql://app:S3cret-db-pw@db/tokens", "sqlite:///x"])
def test_a_wrong_url_scheme_stops_every_command_in_one_line(tmp_path: Path, url: str) -> None:
    """Refused with the settings, before anything tries to connect."""
    environ = {
        "ENV": "test",
        "DATA_DIR": str(tmp_path),
        "ACCESS_TOKEN_SECRET": STRONG_A,
        "REFRESH_TOKEN_SECRET": STRONG_B,
        "MFA_ENCRYPTION_KEY": STRONG_C,
        "DATABASE_URL": url,
    }

    for command in ("migrate", "serve"):
        result = run_cli(command, environ=environ)

        assert result.returncode == 2
        assert result.stderr.startswith("error: DATABASE_URL must start with postgresql://")
        assert "Traceback" not in result.stderr
        assert "S3cret-db-pw" not in result.stderr
        assert_one_line_without_secrets(result.stderr, environ)


# -- development -----------------------------------------------------------------------------


def test_development_generates_strong_private_secrets_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first: dict[str, str] = {}

    path = ensure_development_secrets(first, data_dir)

    assert path == data_dir / "secrets.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    access, refresh = first["ACCESS_TOKEN_SECRET"], first["REFRESH_TOKEN_SECRET"]
    assert access != refresh
    assert len(access.encode()) >= 32
    assert len(refresh.encode()) >= 32
    settings = load_settings(first)
    assert str(settings.access_token_secret) == access

    second: dict[str, str] = {}
    ensure_development_secrets(second, data_dir)
    assert second == first, "the same secrets on the next start: sessions survive a restart"


def test_development_tightens_a_readable_secrets_file(tmp_path: Path) -> None:
    ensure_development_secrets({}, tmp_path)
    (tmp_path / "secrets.env").chmod(0o644)

    ensure_development_secrets({}, tmp_path)

    assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600


def test_given_secrets_are_never_replaced_or_written(tmp_path: Path) -> None:
    environ = {
        "ACCESS_TOKEN_SECRET": STRONG_A,
        "REFRESH_TOKEN_SECRET": STRONG_B,
        "MFA_ENCRYPTION_KEY": STRONG_C,
    }

    assert ensure_development_secrets(environ, tmp_path) is None

    assert environ == {
        "ACCESS_TOKEN_SECRET": STRONG_A,
        "REFRESH_TOKEN_SECRET": STRONG_B,
        "MFA_ENCRYPTION_KEY": STRONG_C,
    }
    assert list(tmp_path.iterdir()) == []


def test_production_needs_its_own_mfa_encryption_key() -> None:
    """Production never derives the key of the TOTP secrets: it must be given, and strong."""
    for key in (None, "short", "ab" * 20):
        environ = {**PRODUCTION_SECRETS, "TOKEN_ISSUER": "https://auth.example"}
        del environ["MFA_ENCRYPTION_KEY"]
        if key is not None:
            environ["MFA_ENCRYPTION_KEY"] = key

        with pytest.raises(ConfigError) as refused:
            load_settings(environ)

        assert "MFA_ENCRYPTION_KEY" in str(refused.value)
        assert_one_line_without_secrets(str(refused.value), environ)


def test_an_old_secrets_file_gains_the_mfa_key_and_keeps_the_rest(tmp_path: Path) -> None:
    """A development secrets.env from before MFA_ENCRYPTION_KEY gets it appended."""
    old = f"ACCESS_TOKEN_SECRET={STRONG_A}\nREFRESH_TOKEN_SECRET={STRONG_B}\n"
    (tmp_path / "secrets.env").write_text(old)
    environ: dict[str, str] = {}

    ensure_development_secrets(environ, tmp_path)

    assert environ["ACCESS_TOKEN_SECRET"] == STRONG_A
    assert environ["REFRESH_TOKEN_SECRET"] == STRONG_B
    assert len(environ["MFA_ENCRYPTION_KEY"]) >= 32
    assert (tmp_path / "secrets.env").read_text().startswith(old)


def test_production_never_generates_secrets(tmp_path: Path) -> None:
    environ = {"ENV": "production"}

    assert ensure_development_secrets(environ, tmp_path) is None

    assert environ == {"ENV": "production"}
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        load_settings(environ)


async def test_the_cli_in_development_generates_the_secrets_file_and_says_so(
    tmp_path: Path, database_url: str
) -> None:
    """`tokenrota migrate` with no secrets: DATA_DIR/secrets.env (0600), announced once; the
    next command reads the same secrets without a word about them."""
    environ = {"ENV": "development", "DATA_DIR": str(tmp_path), "DATABASE_URL": database_url}

    result = await asyncio.to_thread(run_cli, "migrate", environ=environ)

    assert result.returncode == 0, result.stderr
    secrets_file = tmp_path / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert f"development secrets generated into {secrets_file}" in result.stderr
    content = secrets_file.read_text()
    for line in content.splitlines():
        assert line.partition("=")[2] not in result.stderr
    again = await asyncio.to_thread(run_cli, "migrate", environ=environ)
    assert again.returncode == 0
    assert "secrets" not in again.stderr
    assert secrets_file.read_text() == content


PRODUCTION_SECRETS = {
    "ENV": "production",
    "ACCESS_TOKEN_SECRET": STRONG_A,
    "REFRESH_TOKEN_SECRET": STRONG_B,
    "MFA_ENCRYPTION_KEY": STRONG_C,
}


@pytest.mark.parametrize(
    "issuer",
    [
        None,
        "token-service",
        "http://auth.example",
        "https://",
        "https://auth.example?x=1",
        "https://user:pw@auth.example",
        "ftp://auth.example",
    ],
)
def test_production_refuses_an_issuer_that_is_not_an_https_url(issuer: str | None) -> None:
    """The metadata's endpoints are built from the issuer: production must name its URL."""
    environ = dict(PRODUCTION_SECRETS)
    if issuer is not None:
        environ["TOKEN_ISSUER"] = issuer

    with pytest.raises(ConfigError) as refused:
        load_settings(environ)

    assert "TOKEN_ISSUER" in str(refused.value)
    assert_one_line_without_secrets(str(refused.value), environ)


def test_serve_in_production_with_a_non_url_issuer_exits_with_one_line(tmp_path: Path) -> None:
    environ = {
        **PRODUCTION_SECRETS,
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql:///x",
        "TOKEN_ISSUER": "token-service",
    }

    result = run_cli("serve", environ=environ)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ENV=production needs TOKEN_ISSUER")
    assert_one_line_without_secrets(result.stderr, environ)


@pytest.mark.parametrize(
    ("environ", "base"),
    [
        ({"TOKEN_ISSUER": "https://auth.example/"}, "https://auth.example"),
        (
            {"TOKEN_ISSUER": "https://a.example", "PUBLIC_URL": "https://b.example"},
            "https://a.example",
        ),
        ({"PUBLIC_URL": "http://localhost:9000/auth"}, "http://localhost:9000/auth"),
        ({"HOST": "::1", "PORT": "8001"}, "http://[::1]:8001"),
        ({}, "http://127.0.0.1:8000"),
    ],
)
def test_the_public_base_url_comes_from_the_issuer_then_public_url_then_the_address(
    environ: dict[str, str], base: str
) -> None:
    settings = load_settings(
        {
            "ENV": "test",
            "ACCESS_TOKEN_SECRET": STRONG_A,
            "REFRESH_TOKEN_SECRET": STRONG_B,
            "MFA_ENCRYPTION_KEY": STRONG_C,
            **environ,
        }
    )

    assert settings.public_base_url == base
    assert settings.admin_api_audience == base + "/admin"


@pytest.mark.parametrize(
    "url", ["auth.example", "ftp://auth.example", "https://a.example#x", "https://a b"]
)
def test_a_public_url_that_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        load_settings(
            {
                "ENV": "test",
                "ACCESS_TOKEN_SECRET": STRONG_A,
                "REFRESH_TOKEN_SECRET": STRONG_B,
                "MFA_ENCRYPTION_KEY": STRONG_C,
                "PUBLIC_URL": url,
            }
        )
