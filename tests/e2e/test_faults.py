"""Faults a deployment meets, on a real `tokenrota serve`: a worker killed, Postgres restarted.

Clients here behave as the docs ask a client to: a refresh that got no answer (a transport
error) or a 503 is retried with the SAME refresh token, within REFRESH_REUSE_INTERVAL. The
tests check that nothing is lost for them: no chain broken, no session revoked as a reuse, no
token with two children, and no 5xx but 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from tests.outage import ControlledPostgres, ShutdownMode
from tests.processes import (
    clean_environment,
    free_port,
    started,
    stop_gracefully,
    wait_until_answering,
)
from tests.support import PASSWORD, PROJECT_ROOT

CLIENTS = 32
# Seconds of load before the fault, and at least after it (the service's recovery included).
BEFORE_FAULT = 2.0
AFTER_FAULT = 3.0
KILLS = 3
# A deadline against hanging, not a speed check: every chain ends on a successful refresh.
SETTLE_WITHIN = 20.0
REUSE_INTERVAL = 10
# The promise: full service within this many seconds of the database's return.
RECOVERY_WITHIN = 5.0


@dataclass
class Chain:
    """One client's refresh chain and what it saw."""

    email: str
    refresh_token: str = ""
    access_token: str = ""
    refreshes: int = 0
    retries: int = 0
    transport_errors: int = 0
    statuses: list[int] = field(default_factory=list)
    # (monotonic time, status) of every answer; status 0 for a transport error.
    timeline: list[tuple[float, int]] = field(default_factory=list)
    last_refresh_ok: bool = False


@contextlib.contextmanager
def serving(database_url: str, tmp_path: Path, workers: int) -> Iterator[tuple[str, int]]:
    """`python -m tokenrota_server serve` on `database_url`: its base URL and pid."""
    port = free_port()
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    environment = clean_environment(
        ENV="test",
        DATABASE_URL=database_url,
        ACCESS_TOKEN_SECRET=secrets.token_urlsafe(48),
        REFRESH_TOKEN_SECRET=secrets.token_urlsafe(48),
        MFA_ENCRYPTION_KEY=secrets.token_urlsafe(48),
        DATA_DIR=str(tmp_path / "data"),
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        REFRESH_REUSE_INTERVAL=str(REUSE_INTERVAL),
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_COST="8192",
        ARGON2_PARALLELISM="1",
        LOGIN_IP_MAX_ATTEMPTS="10000",
        LOGIN_EMAIL_MAX_ATTEMPTS="10000",
        REGISTER_IP_MAX_ATTEMPTS="10000",
    )
    command = [sys.executable, "-m", "tokenrota_server", "serve", "--workers", str(workers)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with started(command, cwd=PROJECT_ROOT, env=environment, log=tmp_path / "serve.log") as process:
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/readyz", process, seconds=30)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            stop_gracefully(process, seconds=30)


def workers_of(serve_pid: int) -> set[int]:
    """uvicorn's live worker processes: the serve process's spawned children (not zombies)."""
    workers = set()
    for child in psutil.Process(serve_pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # a zombie too: the killed one
            if "multiprocessing.spawn" in " ".join(child.cmdline()):
                workers.add(child.pid)
    return workers


def connections_of(pid: int, port: int) -> int:
    """Established connections on `port` held by process `pid`."""
    return sum(
        1
        for connection in psutil.Process(pid).net_connections(kind="tcp")
        if connection.status == psutil.CONN_ESTABLISHED
        and connection.laddr
        and connection.laddr.port == port
    )


async def new_worker(serve_pid: int, workers: set[int]) -> None:
    """Wait (up to SETTLE_WITHIN) until the serve process has a worker not in `workers`."""
    deadline = time.monotonic() + SETTLE_WITHIN
    while time.monotonic() < deadline:
        if workers_of(serve_pid) - workers:
            return
        await asyncio.sleep(0.05)


async def open_chains(base_url: str, count: int) -> list[Chain]:
    """`count` new users, each logged in once: their chains' first tokens."""
    chains = [
        Chain(email=f"fault-{index}-{secrets.token_hex(4)}@example.com") for index in range(count)
    ]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for chain in chains:
            credentials = {"email": chain.email, "password": PASSWORD}
            assert (await client.post("/register", json=credentials)).status_code == 201
            login = await client.post("/login", json=credentials)
            assert login.status_code == 200, login.text
            chain.refresh_token = login.json()["refresh_token"]
            chain.access_token = login.json()["access_token"]
    return chains


async def refresh_once(client: httpx.AsyncClient, chain: Chain) -> None:
    """One refresh of the chain's LAST token; a lost answer or a 503 leaves it to retry."""
    try:
        response = await client.post("/refresh", json={"refresh_token": chain.refresh_token})
    except httpx.TransportError:
        chain.transport_errors += 1
        chain.retries += 1
        chain.timeline.append((time.monotonic(), 0))
        chain.last_refresh_ok = False
        return
    chain.statuses.append(response.status_code)
    chain.timeline.append((time.monotonic(), response.status_code))
    if response.status_code == 200:
        pair: dict[str, Any] = response.json()
        chain.refresh_token = pair["refresh_token"]
        chain.access_token = pair["access_token"]
        chain.refreshes += 1
        chain.last_refresh_ok = True
        return
    if response.status_code == 503:
        assert response.json()["error"] == "unavailable", response.text
    chain.retries += 1
    chain.last_refresh_ok = False


async def profile_once(client: httpx.AsyncClient, chain: Chain) -> None:
    try:
        response = await client.get(
            "/profile", headers={"Authorization": f"Bearer {chain.access_token}"}
        )
    except httpx.TransportError:
        chain.transport_errors += 1
        chain.timeline.append((time.monotonic(), 0))
        return
    chain.statuses.append(response.status_code)
    chain.timeline.append((time.monotonic(), response.status_code))
    if response.status_code == 503:
        assert response.json()["error"] == "unavailable", response.text


async def run_chain(base_url: str, chain: Chain, stop: asyncio.Event, with_profile: bool) -> None:
    """Refresh (and read /profile) until `stop`; then until the last refresh succeeded."""
    deadline: float | None = None
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while True:
            if stop.is_set():
                deadline = deadline or time.monotonic() + SETTLE_WITHIN
                if chain.last_refresh_ok or time.monotonic() > deadline:
                    return
            if with_profile:
                await profile_once(client, chain)
            await refresh_once(client, chain)
            if not chain.last_refresh_ok:
                # Back off a little before the retry, as a real client would.
                await asyncio.sleep(0.05)


async def chain_invariants(database_url: str, sessions: int) -> None:
    """No token with two children, one live token per session, no session revoked."""
    connection = await asyncpg.connect(database_url)
    try:
        twins = await connection.fetch(
            "SELECT parent_id FROM refresh_tokens WHERE parent_id IS NOT NULL"
            " GROUP BY parent_id HAVING count(*) > 1"
        )
        live = await connection.fetch(
            "SELECT session_id FROM refresh_tokens WHERE used_at IS NULL AND revoked_at IS NULL"
            " GROUP BY session_id HAVING count(*) > 1"
        )
        revoked = await connection.fetch(
            "SELECT id, revoke_reason FROM sessions WHERE revoked_at IS NOT NULL"
        )
        total = await connection.fetchval("SELECT count(*) FROM sessions")
    finally:
        await connection.close()
    assert twins == [], "a refresh token with two children"
    assert live == [], "a session with two live refresh tokens"
    assert revoked == [], "a session revoked (reuse detected?) by a client's honest retry"
    assert total == sessions


async def test_kill_9_of_a_worker_while_32_clients_refresh(
    database_url: str, tmp_path: Path
) -> None:
    """SIGKILL a worker mid-load: uvicorn starts another, and no client's chain is lost.

    The worker killed is the one holding the most client connections; if none of its requests
    happened to be in flight, the new worker is killed too (at most KILLS times), so that some
    client does meet a cut connection.
    """
    victims: list[tuple[int, int, float]] = []  # (pid, connections held, seconds to a new one)
    with serving(database_url, tmp_path, workers=2) as (base_url, serve_pid):
        port = int(base_url.rsplit(":", 1)[1])
        before = workers_of(serve_pid)
        assert len(before) == 2, before
        chains = await open_chains(base_url, CLIENTS)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_chain(base_url, chain, stop, False)) for chain in chains]
        try:
            await asyncio.sleep(BEFORE_FAULT)
            while len(victims) < KILLS and not any(chain.transport_errors for chain in chains):
                workers = workers_of(serve_pid)
                victim = max(workers, key=lambda pid: connections_of(pid, port))
                held = connections_of(victim, port)
                psutil.Process(victim).send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                await new_worker(serve_pid, workers)
                victims.append((victim, held, round(time.monotonic() - killed_at, 2)))
                await asyncio.sleep(1.0)
            await asyncio.sleep(AFTER_FAULT)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        after = workers_of(serve_pid)

    await chain_invariants(database_url, CLIENTS)
    statuses = {status for chain in chains for status in chain.statuses}
    cut = [chain for chain in chains if chain.transport_errors]
    print(
        f"\nkill -9: {len(victims)} kill(s), (pid, connections held, s to a new worker) "
        f"{victims}; {len(cut)} of {CLIENTS} clients saw a transport error and retried; "
        f"{sum(c.refreshes for c in chains)} refreshes; statuses {statuses}"
    )
    assert all(held > 0 for _, held, _ in victims)
    assert all(seconds < SETTLE_WITHIN for _, _, seconds in victims), "no new worker"
    assert not {pid for pid, _, _ in victims} & after
    assert len(after) == 2, "uvicorn did not keep two workers"
    assert statuses <= {200, 503}, statuses
    assert cut, "no kill cut a request: the test did not test the fault"
    # Every client, the ones that retried included, went on with its chain to a good refresh.
    assert [chain.email for chain in chains if not chain.last_refresh_ok] == []
    for chain in cut:
        last_error = max(index for index, (_, status) in enumerate(chain.timeline) if status == 0)
        assert any(status == 200 for _, status in chain.timeline[last_error:])


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restarted_under_load(
    mode: ShutdownMode, outage_postgres: ControlledPostgres, outage_database: str, tmp_path: Path
) -> None:
    """While Postgres is away: 503 `unavailable`; within 5 s of its return: full service."""
    with serving(outage_database, tmp_path, workers=1) as (base_url, serve_pid):
        chains = await open_chains(base_url, 4)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_chain(base_url, chain, stop, True)) for chain in chains]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(outage_postgres.stop, mode)
        stopped_at = time.monotonic()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(outage_postgres.start)
        returned_at = time.monotonic()
        login_ok, refresh_ok = await full_service(base_url, chains[0].email)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        assert psutil.Process(serve_pid).is_running(), "the service restarted or died"

    await chain_invariants(outage_database, len(chains) + 1)
    timeline = sorted(point for chain in chains for point in chain.timeline)
    statuses = {status for _, status in timeline}
    first_503 = min(at for at, status in timeline if status == 503)
    first_200_back = min(at for at, status in timeline if status == 200 and at > returned_at)
    print(
        f"\npostgres -m {mode}: down {returned_at - stopped_at:.2f} s; outage seen by clients "
        f"(first 503 to first 200) {first_200_back - first_503:.2f} s; first 200 "
        f"{first_200_back - returned_at:.2f} s after its return; /login ok "
        f"{login_ok:.2f} s, /refresh ok {refresh_ok:.2f} s after it"
    )
    assert statuses <= {200, 503}, statuses
    assert login_ok <= RECOVERY_WITHIN
    assert refresh_ok <= RECOVERY_WITHIN
    # Every client whose refresh met a 503 retried the same token and went on.
    assert all(chain.retries > 0 for chain in chains), "the outage went unseen"
    assert [chain.email for chain in chains if not chain.last_refresh_ok] == []


async def full_service(base_url: str, email: str) -> tuple[float, float]:
    """Seconds from now until a fresh /login, and then a /refresh of its token, succeed."""
    started_at = time.monotonic()
    deadline = started_at + SETTLE_WITHIN
    credentials = {"email": email, "password": PASSWORD}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while (login := await client.post("/login", json=credentials)).status_code != 200:
            assert login.status_code == 503, login.text
            assert time.monotonic() < deadline, "no /login within the deadline"
            await asyncio.sleep(0.05)
        login_ok = time.monotonic() - started_at
        token = login.json()["refresh_token"]
        while (
            refresh := await client.post("/refresh", json={"refresh_token": token})
        ).status_code != 200:
            assert refresh.status_code == 503, refresh.text
            assert time.monotonic() < deadline, "no /refresh within the deadline"
            await asyncio.sleep(0.05)
        refresh_ok = time.monotonic() - started_at
    return login_ok, refresh_ok
