"""Without DATABASE_URL an operator command uses the embedded Postgres that `tokenrota serve`
uses, wherever it is run from, and never makes one of its own; the start-up notices are said
once per data folder.

Real processes: `tokenrota serve --migrate` on the embedded Postgres of one folder, operator
commands run from another, each with a state directory of the test's own (XDG_STATE_HOME).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    clean_environment,
    free_port,
    started,
    wait_until_answering,
    wait_until_gone,
)

# Deadlines against a hang on a slow, shared machine, not speed checks.
READY_WITHIN = 180.0
RUN_TIMEOUT = 120


def tokenrota(*arguments: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`tokenrota ARGUMENTS` run in `cwd`; its exit status and output."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tokenrota_server", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.mark.slow  # serve and a command on a fresh embedded Postgres: seconds
def test_an_operator_command_elsewhere_uses_the_running_serves_database(tmp_path: Path) -> None:
    """A client created from another folder is one the running server accepts; that folder
    gets no .data. Once the server is gone, the command fails in one line naming where it
    looked, and still makes nothing."""
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    served.mkdir()
    elsewhere.mkdir()
    port = free_port()
    environment = clean_environment(PORT=str(port), XDG_STATE_HOME=str(tmp_path / "state"))
    log = tmp_path / "serve.log"
    serve = [sys.executable, "-m", "tokenrota_server", "serve", "--migrate"]

    with started(serve, cwd=served, env=environment, log=log) as server:
        wait_until_answering(
            f"http://127.0.0.1:{port}/healthz", server, seconds=READY_WITHIN, log=log
        )
        created = tokenrota("create-client", "billing", cwd=elsewhere, env=environment)
        assert created.returncode == 0, created.stderr
        client = json.loads(created.stdout)
        token = httpx.post(
            f"http://127.0.0.1:{port}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
            timeout=30,
        )
        listed = tokenrota("list-clients", cwd=elsewhere, env=environment)
        server.send_signal(signal.SIGINT)
        server.wait(timeout=READY_WITHIN)
    assert wait_until_gone(served / ".data" / "postgres") == []
    after = tokenrota("list-clients", cwd=elsewhere, env=environment)

    assert token.status_code == 200, token.text
    assert client["client_id"] in listed.stdout
    assert str(served / ".data") in created.stderr
    assert after.returncode == 1
    assert len(after.stderr.splitlines()) == 1, after.stderr
    assert f"no embedded PostgreSQL under {elsewhere}/.data/postgres" in after.stderr
    assert str(tmp_path / "state" / "tokenrota" / "serving") in after.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_data_dir_without_a_database_is_refused_and_left_empty(tmp_path: Path) -> None:
    """DATA_DIR names a folder with no embedded Postgres: one line, exit 1, nothing written,
    even with a serve running on another folder."""
    environment = clean_environment(
        DATA_DIR=str(tmp_path / "data"), XDG_STATE_HOME=str(tmp_path / "state")
    )

    result = tokenrota("list-users", cwd=tmp_path, env=environment)

    assert result.returncode == 1
    assert result.stderr == (
        f"error: no embedded PostgreSQL under {tmp_path}/data/postgres (DATA_DIR), and "
        "DATABASE_URL is unset; give the DATA_DIR of your `tokenrota serve`, or set "
        "DATABASE_URL\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_secrets_and_postgres_notices_are_said_once_per_data_folder(tmp_path: Path) -> None:
    """The first command in a folder says where it made the secrets and the Postgres; the
    next ones, which only use them, say nothing about either."""
    environment = clean_environment(XDG_STATE_HOME=str(tmp_path / "state"))

    first = tokenrota("migrate", cwd=tmp_path, env=environment)
    assert wait_until_gone(tmp_path / ".data" / "postgres") == []
    again = tokenrota("migrate", cwd=tmp_path, env=environment)
    assert wait_until_gone(tmp_path / ".data" / "postgres") == []
    operator = tokenrota("list-clients", cwd=tmp_path, env=environment)
    assert wait_until_gone(tmp_path / ".data" / "postgres") == []

    assert first.returncode == again.returncode == operator.returncode == 0, operator.stderr
    assert "development secrets generated into" in first.stderr
    assert "using the embedded PostgreSQL under" in first.stderr
    for later in (again, operator):
        assert "secrets" not in later.stderr
        assert "PostgreSQL" not in later.stderr
