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
import pytest

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
    """`make test` (what CI runs) runs the whole suite in two processes with make check beside
    it, and fails when either fails; `make test-quick` leaves out tests/e2e (processes, browser,
    wheel, fleet, PgBouncer) and the tests marked slow (nested pytest runs)."""
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
    parallel = ".venv/bin/python -m pytest -q -n 2 --dist loadgroup"
    script = " ".join(line.rstrip("\\").strip() for line in full)
    checks = script[: script.index(" & checker=$!")]
    assert "ruff format --check" in checks
    assert "ruff check" in checks
    assert "mypy --strict" in checks
    assert len(full_pytest) == 1
    assert f"{parallel};" in full_pytest[0]
    assert quick_pytest == [f'{parallel} --ignore=tests/e2e -m "not slow"']
    assert "\n  test " in listed
    assert "\n  test-quick " in listed


def fake_tools(directory: Path) -> None:
    """A .venv whose python (the suite) and ruff and mypy (make check) exit as the environment
    says, each leaving a line, with the install stamps current: make test runs only them."""
    shutil.copy(PROJECT_ROOT / "Makefile", directory / "Makefile")
    (directory / "pyproject.toml").touch()
    bin_dir = directory / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool, variable in (
        ("python", "SUITE_EXIT"),
        ("ruff", "CHECK_EXIT"),
        ("mypy", "CHECK_EXIT"),
    ):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*"\nexit ${variable}\n')
        script.chmod(0o755)
    for stamp in (".server-stamp", ".dev-stamp"):
        (directory / ".venv" / stamp).touch()


@pytest.mark.parametrize(
    ("suite", "check", "passes"),
    [(0, 0, True), (0, 1, False), (1, 0, False)],
    ids=["both-pass", "check-fails", "suite-fails"],
)
def test_make_test_fails_when_the_checks_or_the_suite_fail(
    tmp_path: Path, suite: int, check: int, passes: bool
) -> None:
    """The checks run beside the suite, and their report is printed after it, whatever the
    suite did; make test passes only when both passed."""
    fake_tools(tmp_path)

    done = subprocess.run(
        ["make", "--no-print-directory", "test"],  # noqa: S607 - make from PATH
        cwd=tmp_path,
        env=clean_environment(SUITE_EXIT=str(suite), CHECK_EXIT=str(check)),
        capture_output=True,
        text=True,
        timeout=READY_WITHIN,
        check=False,
    )

    assert (done.returncode == 0) is passes, done.stdout + done.stderr
    suite_line = done.stdout.index("python -m pytest -q -n 2 --dist loadgroup")
    report = done.stdout.index(f"==> make check: exit {check}")
    assert suite_line < report
    assert "ruff format --check ." in done.stdout[report:]
