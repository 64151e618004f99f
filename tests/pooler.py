"""PgBouncer in transaction pooling mode, started by a test in front of the test Postgres.

Debian's `pgbouncer` (1.18 on bookworm: no `max_prepared_statements`, so a server connection
is lent for one transaction and prepared statements do not follow a client). It listens on a
free local port, trusts the local user (as the embedded Postgres does), and sends every
database name to the same name on the test server, so a cloned test database is reachable
through it by name. The process is stopped when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import pytest

from tests.processes import clean_environment, free_port, started

PGBOUNCER = "/usr/sbin/pgbouncer"
# Fewer server connections than the apps' pools hold together: transactions really share them.
SERVER_CONNECTIONS_PER_DATABASE = 8
# A deadline against hanging, not a speed check.
LISTENING_WITHIN = 20.0


def pgbouncer_config(server_url: str, port: int, workdir: Path) -> str:
    """The pgbouncer.ini text for a bouncer on `port` in front of the server at `server_url`."""
    parts = urlsplit(server_url)
    # The embedded Postgres listens on a Unix socket only (`?host=/dir`); a URL may name a host.
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    user = parts.username or "postgres"
    # A TEST_DATABASE_URL with a password: the bouncer logs in to the server with it.
    password = f" password={unquote(parts.password)}" if parts.password else ""
    return f"""\
[databases]
* = host={host} port={parts.port or 5432} user={user}{password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS_PER_DATABASE}
max_client_conn = 2000
max_db_connections = 0
server_lifetime = 3600
log_connections = 0
log_disconnections = 0
"""


@contextlib.contextmanager
def running_pgbouncer(server_url: str, workdir: Path) -> Iterator[str]:
    """PgBouncer (transaction pooling) in front of `server_url`; yields its URL (database
    `postgres`: swap the name with `tokenrota.testing.database_url_for`)."""
    if not Path(PGBOUNCER).exists():
        pytest.fail("pgbouncer is missing: apt-get install -y pgbouncer (.ci/run does this)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    database_user = urlsplit(server_url).username or "postgres"
    (workdir / "userlist.txt").write_text(f'"{database_user}" ""\n')
    config = workdir / "pgbouncer.ini"
    config.write_text(pgbouncer_config(server_url, port, workdir))
    command = [PGBOUNCER, str(config)]
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root: it runs as the user who may reach the server.
        user = _unprivileged_user(server_url)
        command[1:1] = ["-u", user]
        for path in (workdir, config, workdir / "userlist.txt"):
            shutil.chown(path, user)
    log = workdir / "pgbouncer.log"
    with started(command, cwd=workdir, env=clean_environment(), log=log) as process:
        _wait_until_listening(port, process_alive=lambda: process.poll() is None, log=log)
        yield f"postgresql://{database_user}@127.0.0.1:{port}/postgres"


def _unprivileged_user(server_url: str) -> str:
    """Who pgbouncer runs as when we are root: the owner of the server's socket directory
    (the embedded Postgres keeps it private to its own user), else `nobody`."""
    parts = urlsplit(server_url)
    host = parse_qs(parts.query).get("host", [""])[0]
    if host.startswith("/"):
        return pwd.getpwuid(Path(host).stat().st_uid).pw_name
    return "nobody"


def _wait_until_listening(port: int, *, process_alive: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + LISTENING_WITHIN
    while time.monotonic() < deadline:
        assert process_alive(), log.read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError(f"pgbouncer never listened on {port}:\n{log.read_text()}")


def through(pooler_url: str, database_url: str) -> str:
    """`database_url`'s database, reached through the bouncer at `pooler_url`."""
    name = urlsplit(database_url).path
    return urlunsplit(urlsplit(pooler_url)._replace(path=name))
