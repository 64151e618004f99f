"""The tests' process helpers leave nothing running: a command's children go with it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from tests.processes import GONE_WITHIN, clean_environment, started

# A parent that starts a long-lived child, writes the child's pid, then waits.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".part", "w") as out:
    out.write(str(child.pid))
import os; os.rename(sys.argv[1] + ".part", sys.argv[1])
time.sleep(600)
"""


def is_gone(process: psutil.Process) -> bool:
    """Whether `process` has ended (a zombie waiting for its reaper has)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def until_gone(process: psutil.Process) -> bool:
    deadline = time.monotonic() + GONE_WITHIN
    while not is_gone(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    return is_gone(process)


def test_started_kills_the_children_a_killed_command_left(tmp_path: Path) -> None:
    """The command is killed inside the block, orphaning its child (as a killed `serve
    --workers N` orphans its workers): leaving the block, the child is gone too."""
    pid_file = tmp_path / "child.pid"
    command = [sys.executable, "-c", PARENT, str(pid_file)]
    with started(command, cwd=tmp_path, env=clean_environment(), log=tmp_path / "log") as parent:
        deadline = time.monotonic() + GONE_WITHIN
        while not pid_file.exists():
            assert parent.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "the command never wrote its child's pid"
            time.sleep(0.05)
        child = psutil.Process(int(pid_file.read_text()))
        parent.kill()
        parent.wait()
        orphaned = not is_gone(child)

    assert orphaned
    assert until_gone(child)
