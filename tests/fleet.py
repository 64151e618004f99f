"""Three `tokenrota serve` processes on one database behind haproxy, as docs/operations.md
configures it ("Several instances behind a proxy"); started by a test on free ports.

haproxy checks each instance's /readyz, retries a request whose instance died under it on
another one (a refresh retried so lands in the grace window: the same child comes back), and
answers its own failures (no instance, a cut answer after its retries) with the service's 503
`unavailable`, never 502 or 504.
"""

from __future__ import annotations

import contextlib
import csv
import io
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    clean_environment,
    free_port,
    started,
    stop_gracefully,
    wait_until_answering,
)
from tests.support import PROJECT_ROOT

HAPROXY = "/usr/sbin/haproxy"
INSTANCES = 3
# Deadlines against hanging, not speed checks.
READY_WITHIN = 60.0
STOPPED_WITHIN = 30.0

# What haproxy answers for its own failures: the service's own 503, so that a client's one rule
# ("retry a 503 or a lost answer with the same refresh token") covers the proxy too.
UNAVAILABLE = (
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Retry-After: 1\r\n"
    "Connection: close\r\n"
    "\r\n"
    '{"error": "unavailable", "error_description": "The service is temporarily unavailable."}'
    "\n"
)


def haproxy_config(port: int, stats_port: int, instances: list[int], errors: Path) -> str:
    """haproxy.cfg: `port` in front of the instances on `instances`, retrying as documented,
    with its statistics (CSV at /stats;csv) on `stats_port`.

    The text is the one docs/operations.md shows, with the ports and the error file filled in.
    """
    servers = "\n".join(
        f"    server instance{index} 127.0.0.1:{instance} check"
        for index, instance in enumerate(instances, start=1)
    )
    return f"""\
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A request whose instance refused it, died under it or closed without answering is
    # sent again, to another instance: /refresh too, which the grace window makes safe. Not
    # after a timeout: 30 s later a refresh retried would be a replay.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response
    errorfile 502 {errors}
    errorfile 503 {errors}
    errorfile 504 {errors}

frontend tokenrota
    bind 127.0.0.1:{port}
    option forwardfor
    default_backend instances

# Retries, redispatches and each instance's health, for the operator only (not the public port).
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend instances
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}
"""


@dataclass
class Fleet:
    """The proxy's URL, and each instance's URL and serve process."""

    url: str
    instances: list[str]
    processes: list[subprocess.Popen[bytes]]
    stats_url: str

    def backend_stats(self) -> dict[str, dict[str, str]]:
        """haproxy's counters, by server name (`BACKEND` for the whole backend)."""
        text = httpx.get(f"{self.stats_url};csv", timeout=10).text
        rows = list(csv.DictReader(io.StringIO(text.removeprefix("# "))))
        return {row["svname"]: row for row in rows if row["pxname"] == "instances"}


def instance_environment(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of one instance: test mode, cheap argon2, the fleet's shared secrets."""
    return clean_environment(
        ENV="test",
        DATABASE_URL=database_url,
        DATA_DIR=str(data_dir),
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8192",
        ARGON2_PARALLELISM="1",
        # The proxy's address: the throttle sees the client's, from X-Forwarded-For.
        TRUSTED_PROXIES="127.0.0.1",
        # The tests register and log in far more often than people; the throttle test sets
        # the limit it tests.
        **{
            "LOGIN_IP_MAX_ATTEMPTS": "10000",
            "LOGIN_EMAIL_MAX_ATTEMPTS": "10000",
            "REGISTER_IP_MAX_ATTEMPTS": "10000",
            **settings,
        },
    )


@contextlib.contextmanager
def running_fleet(database_url: str, workdir: Path, **settings: str) -> Iterator[Fleet]:
    """Three instances on `database_url` (same secrets, `settings` as extra variables) behind
    haproxy; everything stopped when the block ends, however it ends."""
    secrets_env = {
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
    }
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is missing: apt-get install -y haproxy (.ci/run does this)")
    with contextlib.ExitStack() as stack:
        ports, processes = [], []
        for index in range(1, INSTANCES + 1):
            port = free_port()
            environment = instance_environment(
                database_url, workdir / f"data{index}", **secrets_env, **settings
            )
            command = [sys.executable, "-m", "tokenrota_server", "serve"]
            command += ["--host", "127.0.0.1", "--port", str(port)]
            log = workdir / f"instance{index}.log"
            process = stack.enter_context(
                started(command, cwd=PROJECT_ROOT, env=environment, log=log)
            )
            stack.callback(stop_gracefully, process, STOPPED_WITHIN)
            ports.append(port)
            processes.append(process)
        for port, process in zip(ports, processes, strict=True):
            wait_until_answering(f"http://127.0.0.1:{port}/readyz", process, seconds=READY_WITHIN)
        proxy_port, stats_port = free_port(), free_port()
        errors = workdir / "unavailable.http"
        errors.write_text(UNAVAILABLE)
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(proxy_port, stats_port, ports, errors))
        # -db: in the foreground, so `started` owns the one process and stops it.
        command = [HAPROXY, "-db", "-f", str(config)]
        proxy = stack.enter_context(
            started(command, cwd=workdir, env=clean_environment(), log=workdir / "haproxy.log")
        )
        url = f"http://127.0.0.1:{proxy_port}"
        wait_until_answering(f"{url}/readyz", proxy, seconds=READY_WITHIN)
        instances = [f"http://127.0.0.1:{port}" for port in ports]
        yield Fleet(url, instances, processes, f"http://127.0.0.1:{stats_port}/stats")
