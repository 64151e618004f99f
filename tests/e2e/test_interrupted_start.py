"""Ctrl-C at any moment of `tokenrota serve --migrate`'s start-up leaves no Postgres running.

A terminal's Ctrl-C is SIGINT to the whole foreground process group: the command and whatever
it runs at that moment (initdb, pg_ctl). Each case starts the command in a group of its own,
waits for the event that marks one phase of the start-up (a file the phase writes, a process it
starts, a line it logs), sends SIGINT to the group, and checks that no process is left on the
embedded Postgres's data directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from tokenrota_server.db import embedded

from tests.processes import (
    clean_environment,
    free_port,
    processes_mentioning,
    started,
    wait_until_gone,
)

# Deadlines against a hang on a slow, shared machine, not speed checks.
PHASE_WITHIN = 120.0
EXIT_WITHIN = 60.0
# How often a phase's event is looked for: short, so that the signal lands inside the phase.
LOOK_EVERY = 0.005


@dataclass(frozen=True)
class Run:
    """One start-up being watched: its folder, data directory, process and log."""

    folder: Path
    pgdata: Path
    process: subprocess.Popen[bytes]
    log: Path
    port: int


def _listed_user(run: Run) -> bool:
    users = run.pgdata / ".handle_pids.json"
    try:
        return run.process.pid in json.loads(users.read_text())
    except (FileNotFoundError, ValueError):
        return False


def _children(run: Run, program: str) -> list[psutil.Process]:
    """The command's processes running `program` (a name, or a module in their command line)."""
    found = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(run.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.name() == program or program in child.cmdline():
                    found.append(child)
    return found


def _watched(run: Run) -> bool:
    return any(
        "tokenrota_server.db.embedded" in process.info["cmdline"]
        for process in processes_mentioning(run.pgdata)
    )


def _answering(run: Run) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{run.port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


WATCHER = "tokenrota_server.db.embedded"


@dataclass(frozen=True)
class Phase:
    """A moment of the start-up: the event that marks it, and whether it needs a fresh data
    folder (initdb's moments). `held` names a program the command runs then, paused (SIGSTOP)
    when Ctrl-C comes: a machine so busy that it has not finished when the command gives up
    waiting for it."""

    name: str
    reached: Callable[[Run], bool]
    fresh: bool = False
    held: str | None = None


# In start-up order.
PHASES = [
    Phase("at-once-fresh", lambda run: True, fresh=True),
    Phase("secrets-written", lambda run: (run.folder / ".data/secrets.env").exists(), fresh=True),
    Phase("initdb-running", lambda run: bool(_children(run, "initdb")), fresh=True),
    Phase("initdb-done", lambda run: (run.pgdata / "PG_VERSION").exists(), fresh=True),
    Phase("at-once", lambda run: True),
    Phase("pg-ctl-running", lambda run: bool(_children(run, "pg_ctl"))),
    Phase(
        "pg-ctl-slow",
        lambda run: (run.pgdata / "postmaster.pid").exists() and bool(_children(run, "pg_ctl")),
        held="pg_ctl",
    ),
    Phase("server-joined", _listed_user),
    Phase("watcher-starting", lambda run: bool(_children(run, WATCHER))),
    Phase("watcher-slow", lambda run: bool(_children(run, WATCHER)), held=WATCHER),
    Phase("watcher-started", _watched),
    # On a fresh folder: on one at head already, `serve --migrate` has nothing to migrate.
    Phase("migrating", lambda run: "alembic" in run.log.read_text(errors="replace"), fresh=True),
    Phase("serving", _answering),
]


@pytest.fixture(scope="module")
def initialised_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose .data holds a migrated, stopped embedded Postgres (and its secrets)."""
    folder = tmp_path_factory.mktemp("initialised")
    command = [sys.executable, "-m", "tokenrota_server", "migrate"]
    environment = clean_environment()
    with started(command, cwd=folder, env=environment, log=folder / "migrate.log") as migrate:
        assert migrate.wait(timeout=PHASE_WITHIN) == 0, (folder / "migrate.log").read_text()
    assert wait_until_gone(folder / ".data" / "postgres") == []
    return folder


@pytest.mark.parametrize("phase", PHASES, ids=[phase.name for phase in PHASES])
def test_ctrl_c_during_start_up_leaves_no_postgres(
    tmp_path: Path, initialised_folder: Path, phase: Phase
) -> None:
    """SIGINT to the command's process group when `phase` is reached: the command ends, and
    no Postgres (nor its watcher) is left on the data directory."""
    folder = tmp_path if phase.fresh else initialised_folder
    pgdata = folder / ".data" / "postgres"
    port = free_port()
    command = [sys.executable, "-m", "tokenrota_server", "serve", "--migrate"]
    log = tmp_path / f"{phase.name}.log"
    held: list[psutil.Process] = []

    try:
        with started(command, cwd=folder, env=clean_environment(PORT=str(port)), log=log) as serve:
            run = Run(folder, pgdata, serve, log, port)
            hit = _wait_for(run, phase.reached)
            if phase.held is not None:
                held = _children(run, phase.held)
                for process in held:
                    process.suspend()
            os.killpg(serve.pid, signal.SIGINT)
            try:
                serve.wait(timeout=EXIT_WITHIN)
            finally:
                # Even when the command hangs: a process left paused would hold up every
                # later case on the same data directory, and outlive the run.
                for process in held:
                    with contextlib.suppress(psutil.Error):
                        process.resume()
        left = wait_until_gone(pgdata)
    finally:
        # A leak must not outlive the test that found it.
        embedded.stop_postmaster(pgdata.resolve())

    assert hit, f"{phase.name} was never reached:\n{log.read_text(errors='replace')}"
    assert phase.held is None or held, f"{phase.held} had ended before it could be held"
    assert left == [], f"left running after Ctrl-C at {phase.name}: {left}"


def _wait_for(run: Run, reached: Callable[[Run], bool]) -> bool:
    """Look for the phase's event until it happens (True) or the command ends first (False)."""
    waited = 0.0
    while not reached(run):
        if run.process.poll() is not None or waited > PHASE_WITHIN:
            return False
        # The event is a file, a process or a line: nothing to block on but a short look.
        time.sleep(LOOK_EVERY)
        waited += LOOK_EVERY
    return True
