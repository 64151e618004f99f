"""A Postgres pair managed by Patroni, with etcd as its store, started by a test on free ports.

Debian's `patroni` (3.0), `etcd-server` (3.4, its v2 API, which Patroni's `etcd:` speaks) and
`postgresql` (15: the binaries under /usr/lib/postgresql/15/bin; Debian's own cluster is not
used). One primary and one synchronous standby (`synchronous_mode: true`, not strict: see
docs/operations.md, "High availability"). Postgres and Patroni refuse to run as root: as root
they run as Debian's `postgres` user (the package creates it), their data in a temporary
directory that user owns. Everything is stopped when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.processes import clean_environment, free_port, started, wait_until_gone

PATRONI = "/usr/bin/patroni"
PATRONICTL = "/usr/bin/patronictl"
ETCD = "/usr/bin/etcd"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
SCOPE = "tokenrota"
DATABASE = "tokenrota"
# Patroni's timings (docs/operations.md): a leader whose key is not renewed for TTL seconds is
# replaced; loop_wait + 2 * retry_timeout must stay under the TTL.
TTL = 10
LOOP_WAIT = 1
RETRY_TIMEOUT = 3
# Deadlines against hanging, not speed checks.
STARTED_WITHIN = 60.0
STOPPED_WITHIN = 20.0
POLL = 0.1
# Patroni's custom bootstrap: initdb with --no-sync, in the --datadir Patroni appends.
INITDB_SCRIPT = "initdb-nosync.sh"
INITDB_SCRIPT_TEXT = f"""\
for argument; do case $argument in --datadir=*) datadir=${{argument#--datadir=}};; esac; done
exec {POSTGRES_BIN / "initdb"} --no-sync -D "$datadir" -U postgres -E UTF8 --locale=C.UTF-8
"""


@dataclass
class Node:
    """One member: its Postgres port, its REST API, its data, and its running Patroni."""

    name: str
    pg_port: int
    api_port: int
    data_dir: Path
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def postmaster(self) -> psutil.Process | None:
        """The node's running postmaster, from its postmaster.pid."""
        with contextlib.suppress(OSError, ValueError, psutil.NoSuchProcess):
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                return process
        return None


@dataclass
class Cluster:
    """The pair and its store: `url` reaches whichever member is writable."""

    nodes: list[Node]
    etcd: str
    user: str
    workdir: Path

    @property
    def url(self) -> str:
        """The service's DATABASE_URL: both members, the writable one chosen at each connect."""
        hosts = ",".join(f"127.0.0.1:{node.pg_port}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def node_url(self, node: Node, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{node.pg_port}/{database}"

    def members(self) -> list[dict[str, object]]:
        """Patroni's view of the cluster (`GET /cluster` of any member that answers)."""
        for node in self.nodes:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                members: list[dict[str, object]] = httpx.get(
                    f"{node.api}/cluster", timeout=2
                ).json()["members"]
                return members
        return []

    def leader(self) -> Node | None:
        """The member that answers as the writable primary now."""
        for node in self.nodes:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{node.api}/primary", timeout=2).status_code == 200:
                    return node
        return None

    def sync_standby(self) -> Node | None:
        """The member Patroni lists as the synchronous standby and that is streaming."""
        for member in self.members():
            if member.get("role") == "sync_standby" and member.get("state") in (
                "running",
                "streaming",
            ):
                return self.by_name(str(member["name"]))
        return None

    def by_name(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def wait_healthy(self, seconds: float = STARTED_WITHIN) -> tuple[Node, Node]:
        """Wait until one member leads and the other is its streaming synchronous standby."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            leader, standby = self.leader(), self.sync_standby()
            if leader is not None and standby is not None and standby is not leader:
                return leader, standby
            time.sleep(POLL)
        raise AssertionError(f"no primary with a sync standby: {self.members()}\n{self.logs()}")

    def restore(self) -> tuple[Node, Node]:
        """Start any member that is down, and wait until the pair is healthy again."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                self.start(node)
        return self.wait_healthy()

    def start(self, node: Node) -> None:
        """Start the member's Patroni (again): it starts, or rejoins with, its Postgres."""
        assert node.process is None or node.process.poll() is not None
        node.stack.close()
        node.stack = contextlib.ExitStack()
        command = [PATRONI, str(node.config)]
        if os.geteuid() == 0:
            as_user = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups"]
            command = [*as_user, *command]
        node.process = node.stack.enter_context(
            started(command, cwd=self.workdir, env=patroni_environment(), log=node.log)
        )

    def kill(self, node: Node) -> None:
        """The member's machine dies: SIGKILL its Patroni and its postmaster together."""
        postmaster = node.postmaster()
        assert node.process is not None
        assert postmaster is not None
        os.kill(node.process.pid, signal.SIGKILL)
        postmaster.kill()
        node.process.wait()
        node.stack.close()

    def stop(self, node: Node) -> None:
        """Stop the member and its Postgres for good (the end of the run)."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
        node.stack.close()
        postmaster = node.postmaster()
        if postmaster is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                children = postmaster.children(recursive=True)
                postmaster.kill()
                for child in children:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
        left = wait_until_gone(node.data_dir, STOPPED_WITHIN)
        assert left == [], left

    def switchover(self, candidate: Node) -> subprocess.CompletedProcess[str]:
        """`patronictl switchover` to `candidate`, now, without questions."""
        leader = self.leader()
        assert leader is not None
        command = [PATRONICTL, "-c", str(leader.config), "switchover", SCOPE]
        command += ["--leader", leader.name, "--candidate", candidate.name, "--force"]
        return subprocess.run(  # noqa: S603 - the test's own command
            command, env=patroni_environment(), capture_output=True, text=True, timeout=60
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {node.name}\n{node.log.read_text(errors='replace')[-4000:]}"
            for node in self.nodes
            if node.log.exists()
        )


def patroni_environment() -> dict[str, str]:
    # Patroni reads PATRONI_* variables over its file: none of the test's reach it.
    return clean_environment(LC_ALL="C.UTF-8", LANG="C.UTF-8")


def patroni_config(node: Node, etcd: str, sockets: Path) -> dict[str, object]:
    """The member's patroni.yml (as JSON, which YAML reads): see docs/operations.md."""
    return {
        "scope": SCOPE,
        "name": node.name,
        "restapi": {
            "listen": f"127.0.0.1:{node.api_port}",
            "connect_address": f"127.0.0.1:{node.api_port}",
        },
        "etcd": {"host": etcd},
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": True,
                "synchronous_mode_strict": False,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 5,
                        "max_replication_slots": 5,
                        "max_connections": 100,
                    },
                },
            },
            # No fsync (fsync=off): the tests kill processes, never the machine, so
            # the page cache keeps what was written; real deployments keep the defaults.
            # initdb without its final sync (Patroni's own initdb step refuses --no-sync): a
            # third of the time on a busy machine.
            "method": "initdb_nosync",
            "initdb_nosync": {"command": f"sh {sockets / INITDB_SCRIPT}"},
            "pg_hba": [
                "local all all trust",
                "host replication replicator 127.0.0.1/32 trust",
                "host all all 127.0.0.1/32 trust",
            ],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.pg_port}",
            "connect_address": f"127.0.0.1:{node.pg_port}",
            "data_dir": str(node.data_dir),
            "bin_dir": str(POSTGRES_BIN),
            "pgpass": str(node.data_dir.parent / f"{node.name}.pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": "postgres"},
                "replication": {"username": "replicator", "password": "replicator"},
                "rewind": {"username": "postgres", "password": "postgres"},
            },
            "basebackup": [{"checkpoint": "fast"}],
            "parameters": {"unix_socket_directories": str(sockets), "fsync": "off"},
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def _user() -> str:
    """Who Patroni and Postgres run as: ourselves, or Debian's `postgres` user when root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("postgres").pw_name
    pytest.fail("no `postgres` user: apt-get install -y postgresql (.ci/run does this)")


def _check_installed() -> None:
    for path in (PATRONI, PATRONICTL, ETCD, str(POSTGRES_BIN / "postgres")):
        if not Path(path).exists():
            pytest.fail(
                f"{path} is missing: apt-get install -y patroni etcd-server etcd-client"
                " postgresql (.ci/run does this)"
            )


@contextlib.contextmanager
def running_cluster(log_dir: Path) -> Iterator[Cluster]:
    """etcd and two Patroni members, a primary with the database `tokenrota` created, the other
    still cloning it (`Cluster.wait_healthy` waits for it to stream as the synchronous
    standby); everything stopped and removed when the block ends."""
    _check_installed()
    user = _user()
    log_dir.mkdir(parents=True, exist_ok=True)
    # Not under pytest's tmp_path: its parent is private to the user running the tests.
    workdir = Path(tempfile.mkdtemp(prefix="tokenrota-ha-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        shutil.chown(workdir, user, user)
        etcd_port, peer_port = free_port(), free_port()
        etcd = f"127.0.0.1:{etcd_port}"
        etcd_command = [
            ETCD,
            "--name=ha",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://{etcd}",
            f"--advertise-client-urls=http://{etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=ha=http://127.0.0.1:{peer_port}",
            "--enable-v2",
            "--log-level=warn",
        ]
        etcd_process = stack.enter_context(
            started(etcd_command, cwd=workdir, env=clean_environment(), log=log_dir / "etcd.log")
        )
        _wait_for_etcd(etcd, etcd_process, log_dir / "etcd.log")
        nodes = []
        for index in (1, 2):
            name = f"node{index}"
            node = Node(
                name=name,
                pg_port=free_port(),
                api_port=free_port(),
                data_dir=workdir / name,
                config=workdir / f"{name}.yml",
                log=log_dir / f"{name}.log",
            )
            node.config.write_text(json.dumps(patroni_config(node, etcd, workdir)))
            shutil.chown(node.config, user, user)
            nodes.append(node)
        (workdir / INITDB_SCRIPT).write_text(INITDB_SCRIPT_TEXT)
        cluster = Cluster(nodes, etcd, user, workdir)
        for node in nodes:
            stack.callback(cluster.stop, node)
        # Started together: one wins the race to initialise the cluster, the other clones it.
        for node in nodes:
            cluster.start(node)
        leader = _wait_for_leader(cluster)
        _create_database(cluster.node_url(leader, "postgres"))
        yield cluster


def _wait_for_etcd(etcd: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTED_WITHIN
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{etcd}/health", timeout=2).status_code == 200:
                return
        time.sleep(POLL)
    raise AssertionError(f"etcd never answered:\n{log.read_text()}")


def _wait_for_leader(cluster: Cluster) -> Node:
    deadline = time.monotonic() + STARTED_WITHIN
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            assert node.process is not None
            assert node.process.poll() is None, cluster.logs()
        leader = cluster.leader()
        if leader is not None:
            return leader
        time.sleep(POLL)
    raise AssertionError(f"no member became primary:\n{cluster.logs()}")


def _create_database(url: str) -> None:
    psql = [str(POSTGRES_BIN / "psql"), url, "-v", "ON_ERROR_STOP=1"]
    subprocess.run(  # noqa: S603 - the test's own command
        [*psql, "-c", f"CREATE DATABASE {DATABASE}"],
        check=True,
        capture_output=True,
        env=clean_environment(),
        timeout=30,
    )
