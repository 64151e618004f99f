"""The command line: `create-user` takes the password from stdin; usage is described and checked."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import asyncpg
import httpx
import pytest
from tokenrota_server.cli.main import main

from tests.checks import assert_error
from tests.cli.test_config import run_cli
from tests.support import register

PASSWORD = "a long enough cli password"


def cli_environment(database_url: str) -> dict[str, str]:
    return {
        "ENV": "test",
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "8192",
        "ARGON2_PARALLELISM": "1",
    }


async def create_user(
    database_url: str, email: str, stdin: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        run_cli, "create-user", email, environ=cli_environment(database_url), stdin=stdin
    )


async def test_create_user_then_login_works(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    result = await create_user(database_url, "cli@example.com", PASSWORD + "\n")

    assert result.returncode == 0, result.stderr
    user_id = result.stdout.strip()
    assert (
        await db.fetchval("SELECT id::text FROM users WHERE email = 'cli@example.com'") == user_id
    )
    assert PASSWORD not in result.stdout + result.stderr
    response = await client.post("/login", json={"email": "cli@example.com", "password": PASSWORD})
    assert response.status_code == 200, response.text
    profile = await client.get(
        "/profile", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert profile.json()["user"]["id"] == user_id


async def test_the_password_is_taken_whole_from_stdin(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """Only the line ending is stripped: spaces inside and around are part of the password."""
    password = "  spaced out password  "

    result = await create_user(database_url, "spaces@example.com", password + "\n")

    assert result.returncode == 0, result.stderr
    for attempt, status in ((password, 200), (password.strip(), 401)):
        response = await client.post(
            "/login", json={"email": "spaces@example.com", "password": attempt}
        )
        assert response.status_code == status


async def test_create_user_refuses_a_weak_password_without_echoing_it(
    db: asyncpg.Connection, database_url: str
) -> None:
    result = await create_user(database_url, "weak@example.com", "short7!\n")

    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "short7!" not in result.stderr
    assert "\n" not in result.stderr.strip()
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_create_user_refuses_a_taken_email_and_a_bad_one(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    await register(client, "dup@example.com", PASSWORD)

    taken = await create_user(database_url, "DUP@example.com", PASSWORD + "\n")
    invalid = await create_user(database_url, "not an email", PASSWORD + "\n")
    listed = await create_user(database_url, "Victim<atk@evil.test>", PASSWORD + "\n")

    assert (taken.returncode, invalid.returncode, listed.returncode) == (1, 1, 1)
    assert listed.stderr.startswith("error: The email must be one address")
    assert "already exists" in taken.stderr
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    response = await client.post("/login", json={"email": "dup@example.com", "password": "x" * 9})
    assert_error(response, 401, "invalid_credentials")


# -- usage -----------------------------------------------------------------------------------

# Every command and what its --help must mention: each option and positional argument.
COMMAND_OPTIONS = {
    "serve": ["--host", "--port", "--workers", "--migrate", "HOST", "PORT", "WEB_CONCURRENCY"],
    "migrate": [],
    "create-user": ["EMAIL", "stdin"],
    "disable-user": ["EMAIL"],
    "purge": ["PURGE_BATCH_SIZE"],
    "create-client": ["NAME", "--scope", "--dpop-bound-access-tokens"],
    "rotate-client-secret": ["CLIENT_ID"],
    "disable-client": ["CLIENT_ID"],
    "set-client-dpop": ["CLIENT_ID", "--on", "--off"],
    "list-clients": [],
    "create-role": ["NAME", "--scope", "--require-mfa"],
    "grant-role": ["EMAIL", "ROLE"],
    "revoke-role": ["EMAIL", "ROLE"],
    "list-users": ["--email", "PREFIX"],
    "enable-user": ["EMAIL"],
    "delete-user": ["EMAIL"],
    "create-resource": ["URI", "--name", "--scope", "--ttl"],
    "list-resources": [],
    "delete-resource": ["URI"],
    "grant-resource": ["CLIENT_ID", "URI", "--kind", "--scope"],
    "revoke-resource": ["CLIENT_ID", "URI", "--kind"],
    "list-client-resources": ["CLIENT_ID"],
    "help": ["COMMAND"],
}


def help_text(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*arguments, "--help"])
    assert exited.value.code == 0
    out: str = capsys.readouterr().out
    return out


def test_the_help_lists_every_command_with_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)

    listed = re.findall(r"^    ([a-z][a-z-]+)\s", text, re.MULTILINE)
    assert listed == list(COMMAND_OPTIONS)
    for name in ("DATABASE_URL", "ENV", "DATA_DIR", "exit status", "--version"):
        assert name in text


@pytest.mark.parametrize(("command", "options"), COMMAND_OPTIONS.items())
def test_each_command_help_describes_each_of_its_arguments(
    capsys: pytest.CaptureFixture[str], command: str, options: list[str]
) -> None:
    text = help_text(capsys, command)

    assert text.startswith(f"usage: tokenrota {command}")
    # A description of its own, beyond the usage line and --help.
    assert len(text.split("\n\n")[1].strip()) > 20
    for option in options:
        assert option in text, f"{command} --help does not mention {option}"


@pytest.mark.parametrize("command", [[], ["revoke-role"]], ids=["all", "one command"])
def test_help_as_a_command_prints_the_help_it_names(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    """`tokenrota help [COMMAND]` is `tokenrota [COMMAND] --help`, and touches nothing."""
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to it: the same in both processes
    expected = help_text(capsys, *command)

    result = run_cli("help", *command, environ={"DATA_DIR": str(tmp_path), "COLUMNS": "100"})

    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_the_help_names_the_settings_page_and_says_what_each_role_command_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The settings are listed in docs/operations.md; revoke-role takes a role from a user."""
    text = help_text(capsys)
    revoke = help_text(capsys, "revoke-role")

    assert "docs/operations.md" in text
    assert "service guide" not in text
    assert "take a user a role" not in text
    assert re.search(r"revoke-role\s+take a role from a user", text)
    assert "grant-role" in text
    assert re.search(r"grant-role\s+give a user a role", text)
    assert "Take a role from a user" in revoke


def test_the_console_script_prints_its_version() -> None:
    script = Path(sys.executable).parent / "tokenrota"

    result = subprocess.run(  # noqa: S603 - the script this environment installed
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0
    assert result.stdout.strip() == f"tokenrota {metadata.version('tokenrota')}"


@pytest.mark.parametrize(
    ("arguments", "environ", "says"),
    [
        (["serve", "--port", "http"], {}, "argument --port: 'http' is not a port number"),
        (["serve", "--port", "70000"], {}, "is not a port number (0 to 65535)"),
        (["serve", "--workers", "0"], {}, "argument --workers: '0' is not a whole number"),
        (["serve"], {"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY must be a whole number"),
        (["serve", "--verbose"], {}, "unrecognized arguments: --verbose"),
        (["create-user"], {}, "the following arguments are required: EMAIL"),
        (["deploy"], {}, "invalid choice: 'deploy'"),
        ([], {}, "the following arguments are required: COMMAND"),
    ],
)
def test_a_usage_error_is_one_line_with_status_2(
    tmp_path: Path, arguments: list[str], environ: dict[str, str], says: str
) -> None:
    environ = {
        "ENV": "test",
        "DATA_DIR": str(tmp_path),
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        **environ,
    }

    result = run_cli(*arguments, environ=environ)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert says in result.stderr
    assert list(tmp_path.iterdir()) == [], "refused before anything was started or written"


# -- what a command loads ---------------------------------------------------------------------

# What no operator command needs: the web server and its routes, the migrations' machinery, the
# process inspector (only `serve` and a command looking for a running one use it).
SERVING_ONLY = (
    "uvicorn",
    "tokenrota_server.app",
    "tokenrota_server.http",
    "alembic",
    "sqlalchemy",
    "psutil",
    "prometheus_client",
)
# Password hashing and JOSE: only the commands that hash a secret or mint a token.
HASHING = ("argon2",)
TOKENS = ("jose", "cryptography", "tokenrota_server.tokens")


def modules_loaded(*arguments: str, environ: dict[str, str]) -> set[str]:
    """The modules `tokenrota ARGUMENTS` imports, as `python -X importtime` lists them; the
    command must succeed."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-X", "importtime", "-m", "tokenrota_server", *arguments],
        env={"PATH": os.environ.get("PATH", ""), **environ},
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rpartition("|")[2].strip() for line in lines[1:]}  # the first is the header


def loaded_of(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages)}


def test_help_loads_no_database_driver_and_no_settings(tmp_path: Path) -> None:
    """`--help` is argparse and the help text: no event loop, driver, web framework or settings."""
    loaded = modules_loaded("--help", environ={"DATA_DIR": str(tmp_path)})

    assert "tokenrota_server.cli.main" in loaded
    assert (
        loaded_of(
            loaded, ("asyncio", "asyncpg", "starlette", "tokenrota_server.config", *SERVING_ONLY)
        )
        == set()
    )


@pytest.mark.parametrize(
    ("arguments", "allowed"),
    [
        (["migrate"], ()),  # at head already: nothing for alembic to do
        (["list-clients"], ()),
        (["list-users"], ()),
        (["create-role", "support", "--scope", "tickets:read"], ()),
        (["create-client", "billing"], HASHING),
    ],
    ids=["migrate-at-head", "list-clients", "list-users", "create-role", "create-client"],
)
def test_an_operator_command_loads_only_what_it_runs(
    database_url: str, arguments: list[str], allowed: tuple[str, ...]
) -> None:
    loaded = modules_loaded(*arguments, environ=cli_environment(database_url))

    assert "asyncpg" in loaded
    unneeded = tuple(p for p in (*SERVING_ONLY, *HASHING, *TOKENS) if p not in allowed)
    assert loaded_of(loaded, unneeded) == set()
    if allowed:
        assert loaded_of(loaded, allowed)
