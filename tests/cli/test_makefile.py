"""The Makefile: its test targets, and `make clean` stopping the embedded Postgres under `.data/`
before it deletes its files.

Run on a copy of the Makefile in a temporary folder, with a real `tokenrota serve` on the
embedded Postgres there: deleting a running server's data directory would leave a postmaster
behind with nothing on disk to stop it by.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from tests.processes import (
    clean_environment,
    free_port,
    processes_mentioning,
    started,
    wait_until_answering,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# A deadline against a hang on a slow, shared machine; not a speed check.
READY_WITHIN = 120.0


def postmasters_on(pgdata: Path) -> list[psutil.Process]:
    """The Postgres server processes running on `pgdata` (not the watcher that names it too)."""
    return [
        process
        for process in processes_mentioning(pgdata)
        if Path(process.info["cmdline"][0]).name == "postgres"
    ]


def test_make_clean_stops_a_running_embedded_postgres_then_deletes_data(tmp_path: Path) -> None:
    """With `tokenrota serve` still running on .data/postgres, `make clean` leaves no Postgres
    process on that directory, and no directory."""
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")
    pgdata = tmp_path / ".data" / "postgres"
    port = free_port()
    environment = clean_environment(PORT=str(port))
    serve = [sys.executable, "-m", "tokenrota_server", "serve", "--migrate"]

    with started(serve, cwd=tmp_path, env=environment, log=tmp_path / "serve.log") as server:
        wait_until_answering(
            f"http://127.0.0.1:{port}/healthz",
            server,
            seconds=READY_WITHIN,
            log=tmp_path / "serve.log",
        )
        running_before = postmasters_on(pgdata)
        cleaned = subprocess.run(
            ["make", "clean"],  # noqa: S607 - make from PATH, as a developer runs it
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=READY_WITHIN,
            check=False,
        )
        # make clean waits for the postmaster itself: nothing may be left when it returns.
        left_by_clean = postmasters_on(pgdata)

    assert running_before != []
    assert cleaned.returncode == 0, cleaned.stderr
    assert left_by_clean == []
    assert "stopping the embedded PostgreSQL" in cleaned.stdout
    assert not (tmp_path / ".data").exists()


def make_dry_run(*arguments: str, directory: Path) -> str:
    """What `make` would run for `arguments`, without running it."""
    dry = subprocess.run(  # noqa: S603 - our own targets
        ["make", "--no-print-directory", "-n", *arguments],  # noqa: S607 - make from PATH
        cwd=directory,
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    return dry.stdout


def test_make_test_runs_every_test_and_test_quick_all_but_the_end_to_end_ones(
    tmp_path: Path,
) -> None:
    """`make test` (what CI runs) checks, then runs the whole suite in two processes;
    `make test-quick` leaves out tests/e2e (processes, browser, wheel, fleet, PgBouncer) and the
    tests marked slow (nested pytest runs)."""
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").touch()  # what the install steps depend on

    full = make_dry_run("test", directory=tmp_path).splitlines()
    quick = make_dry_run("test-quick", directory=tmp_path).splitlines()
    listed = subprocess.run(
        ["make", "--no-print-directory", "help"],  # noqa: S607 - make from PATH
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    full_pytest = [line for line in full if "-m pytest" in line]
    quick_pytest = [line for line in quick if "-m pytest" in line]
    assert any("mypy --strict" in line for line in full)
    parallel = ".venv/bin/python -m pytest -q -n 2 --dist loadgroup"
    assert full_pytest == [parallel]
    assert quick_pytest == [f'{parallel} --ignore=tests/e2e -m "not slow"']
    assert "\n  test " in listed
    assert "\n  test-quick " in listed
