"""Which embedded database an operator command uses: never one of its own making.

`tokenrota serve` on the embedded Postgres records its data folder in a file of this user's
state directory (`$XDG_STATE_HOME/tokenrota/serving/`, else `~/.local/state/...`) for as long as
it runs. An operator command without `DATABASE_URL` uses the embedded Postgres of its `DATA_DIR`
when one was made there, else that of the one `tokenrota serve` running; with none (or several),
it stops with one line saying where it looked, having created nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tokenrota_server.cli.startup import StartupError


@dataclass(frozen=True)
class Serving:
    """A running `tokenrota serve` and the data folder of its embedded Postgres."""

    pid: int
    data_dir: Path


def record_serving(data_dir: Path, environ: dict[str, str]) -> None:
    """Record this process as serving on the embedded Postgres under `data_dir`, until it ends."""
    import psutil  # here: only a serve and a command looking for one need it

    directory = _records(environ)
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    record = {
        "pid": pid,
        # With the pid, the start time tells this process from a later one given its number.
        "started": psutil.Process(pid).create_time(),
        "data_dir": str(data_dir.resolve()),
    }
    written = directory / f"{pid}.json.new"
    written.write_text(json.dumps(record))
    written.replace(directory / f"{pid}.json")
    atexit.register(_forget, directory / f"{pid}.json", pid)


def operator_data_dir(environ: dict[str, str]) -> Path:
    """The data folder whose embedded Postgres an operator command uses.

    `DATA_DIR` (default `.data`) when an embedded Postgres was made there; else, without an
    explicit `DATA_DIR`, the folder of the one `tokenrota serve` running. Raises `StartupError`
    when there is none, or several to choose from.
    """
    given = environ.get("DATA_DIR", "").strip()
    local = Path(given or ".data")
    if (local / "postgres" / "PG_VERSION").exists():
        return local
    where = f"{local.resolve()}/postgres"
    if given:
        raise StartupError(
            f"no embedded PostgreSQL under {where} (DATA_DIR), and DATABASE_URL is unset; "
            "give the DATA_DIR of your `tokenrota serve`, or set DATABASE_URL"
        )
    folders = sorted({str(serving.data_dir) for serving in running_serves(environ)})
    if len(folders) == 1:
        # Not the folder the operator is in: say which database this is.
        print(
            f"using the embedded PostgreSQL of `tokenrota serve` under {folders[0]}",
            file=sys.stderr,
        )
        return Path(folders[0])
    if folders:
        raise StartupError(
            f"DATABASE_URL is unset and several `tokenrota serve` run on embedded databases "
            f"({', '.join(folders)}); choose one with DATA_DIR, or set DATABASE_URL"
        )
    raise StartupError(
        f"DATABASE_URL is unset, there is no embedded PostgreSQL under {where}, and no "
        f"`tokenrota serve` on one is running (looked in {_records(environ)}); run this where "
        "`tokenrota serve` runs, or set DATA_DIR or DATABASE_URL"
    )


def running_serves(environ: dict[str, str]) -> list[Serving]:
    """The `tokenrota serve` processes of this user still running on an embedded Postgres."""
    import psutil

    found = []
    for path in sorted(_records(environ).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            process = psutil.Process(record["pid"])
            alive = process.create_time() == record["started"] and process.is_running()
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            alive = False
        if alive:
            found.append(Serving(record["pid"], Path(record["data_dir"])))
        else:
            # Left by a serve that was killed: no atexit handler ran to remove it.
            with contextlib.suppress(OSError):
                path.unlink()
    return found


def _records(environ: dict[str, str]) -> Path:
    """The folder of the records: under XDG_STATE_HOME, else ~/.local/state (XDG's default)."""
    state = environ.get("XDG_STATE_HOME", "").strip()
    if not state:
        home = environ.get("HOME", "").strip() or str(Path.home())
        state = str(Path(home) / ".local" / "state")
    return Path(state) / "tokenrota" / "serving"


def _forget(path: Path, pid: int) -> None:
    # A forked child inherits atexit handlers; only the serving process removes its record.
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            path.unlink()
