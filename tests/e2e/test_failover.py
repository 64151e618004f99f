"""The database's machine dies: a Patroni pair (tests/patroni.py) under two `tokenrota serve`
instances that reach it through one multi-host DATABASE_URL (target_session_attrs=read-write).

Clients behave as docs/operations.md asks: a 503 or a lost answer is retried with the same
refresh token. What the tests hold the service to: no rotation that answered 200 is lost by a
failover (the standby is synchronous), no chain is taken for a reuse, no answer but 200 and 503
(with Retry-After), and the service serves again by itself once Patroni has a new primary.
Each test prints what it measured: the 503 window, the time to serve again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from tokenrota_server.config import Settings

from tests.fleet import instance_environment
from tests.oauth_support import FEED_SCOPE, basic, create_client
from tests.patroni import (
    LOOP_WAIT,
    RETRY_TIMEOUT,
    TTL,
    Cluster,
    Node,
    patroni_config,
    running_cluster,
)
from tests.processes import (
    clean_environment,
    free_port,
    started,
    stop_gracefully,
    wait_until_answering,
)
from tests.support import PASSWORD, PROJECT_ROOT

CHAINS = 32
# Retries of a refresh whose answer was lost land in the grace window, even across a failover.
REUSE_INTERVAL = 60
# Longer than any wait here: a feed answer that comes early was woken by a NOTIFY, so by a
# LISTEN on the new primary.
POLL_INTERVAL = 120
FEED_WAIT = 20
# How long a client waits for an answer: a request must never hang past it.
CLIENT_TIMEOUT = 15.0
# A client keeps an idle connection for less than the server's keep-alive (uvicorn: 5 s), or a
# request sent as the server closes it is lost in the race (RemoteProtocolError).
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2.0)
# Load before the fault, so every chain is under way (its connections opened).
ANSWERS_BEFORE_FAULT = 2 * CHAINS
# Answers each chain must have after the service serves again, before the load stops.
REFRESHES_AFTER = 1
# Deadlines against hanging, not speed checks: Patroni replaces a dead leader within its TTL
# plus a loop and its retries; the service is then one reconnect away.
PROMOTED_WITHIN = TTL + LOOP_WAIT + 2 * RETRY_TIMEOUT + 10.0
SETTLE_WITHIN = 60.0
STOPPED_WITHIN = 20.0


@dataclass
class Chain:
    """One client's refresh chain, sent alternately to either instance, and what it saw."""

    email: str
    refresh_token: str = ""
    access_token: str = ""
    # Every refresh token the client was given (the login's, then one per rotation).
    tokens: set[str] = field(default_factory=set)
    last_refresh_ok: bool = False
    # (monotonic time, status, seconds it took) of every answer; status 0 for no answer.
    answers: list[tuple[float, int, float]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Load:
    """The chains, and the moment of the fault."""

    chains: list[Chain]
    fault_at: float = 0.0

    def answers(self) -> list[tuple[float, int, float]]:
        return sorted(answer for chain in self.chains for answer in chain.answers)

    def statuses(self) -> set[int]:
        return {status for _, status, _ in self.answers()}

    def window(self) -> tuple[float, float]:
        """(first, last) answer other than 200 after the fault, in seconds after it."""
        bad = [at for at, status, _ in self.answers() if status != 200 and at >= self.fault_at]
        if not bad:
            return 0.0, 0.0
        return bad[0] - self.fault_at, bad[-1] - self.fault_at

    def serving_again(self) -> float:
        """Seconds from the fault to the first 200 after the last answer other than 200."""
        _, last_bad = self.window()
        after = [
            at
            for at, status, _ in self.answers()
            if status == 200 and at - self.fault_at > last_bad
        ]
        return after[0] - self.fault_at if after else float("inf")

    def slowest(self) -> float:
        """The longest any request took."""
        return max(took for _, _, took in self.answers())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The Patroni pair, migrated through the multi-host URL (while the standby is cloned);
    stopped when the module ends."""
    with running_cluster(tmp_path_factory.mktemp("patroni")) as cluster:
        migrated = subprocess.run(
            [sys.executable, "-m", "tokenrota_server", "migrate"],
            cwd=PROJECT_ROOT,
            env=clean_environment(DATABASE_URL=cluster.url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        yield cluster


@pytest.fixture(scope="module")
def instances(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two `tokenrota serve` instances on the pair's multi-host URL, same secrets."""
    workdir = tmp_path_factory.mktemp("instances")
    shared = {
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(48),
        "REFRESH_TOKEN_SECRET": secrets.token_urlsafe(48),
        "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        "REFRESH_REUSE_INTERVAL": str(REUSE_INTERVAL),
        "REVOCATION_POLL_INTERVAL": str(POLL_INTERVAL),
    }
    with contextlib.ExitStack() as stack:
        running = []
        for name in ("a", "b"):
            port = free_port()
            environment = instance_environment(cluster.url, workdir / name, **shared)
            command = [sys.executable, "-m", "tokenrota_server", "serve", "--workers", "1"]
            command += ["--host", "127.0.0.1", "--port", str(port)]
            log = workdir / f"{name}.log"
            process = stack.enter_context(
                started(command, cwd=PROJECT_ROOT, env=environment, log=log)
            )
            stack.callback(stop_gracefully, process, STOPPED_WITHIN)
            running.append((f"http://127.0.0.1:{port}", process, log))
        # Both started before either is waited for: they boot side by side.
        for url, process, log in running:
            wait_until_answering(f"{url}/readyz", process, seconds=60, log=log)
        yield [url for url, _, _ in running]


@pytest.fixture
def healthy(cluster: Cluster, instances: list[str]) -> Cluster:
    """The pair as each test starts: a primary and its synchronous standby, both running."""
    cluster.restore()
    return cluster


async def open_chains(instances: list[str], count: int) -> list[Chain]:
    chains = [Chain(email=f"ha-{n}-{secrets.token_hex(4)}@example.com") for n in range(count)]

    async def start(http: httpx.AsyncClient, base: str, chain: Chain) -> None:
        credentials = {"email": chain.email, "password": PASSWORD}
        assert (await http.post(f"{base}/register", json=credentials)).status_code == 201
        login = await http.post(f"{base}/login", json=credentials)
        assert login.status_code == 200, login.text
        chain.refresh_token = login.json()["refresh_token"]
        chain.access_token = login.json()["access_token"]
        chain.tokens.add(chain.refresh_token)

    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
        await asyncio.gather(
            *(start(http, instances[n % 2], chain) for n, chain in enumerate(chains))
        )
    return chains


async def ask(chain: Chain, request: Any) -> httpx.Response | None:
    """Send one request; note its answer (or none), and anything but a 200 or a proper 503."""
    started_at = time.monotonic()
    try:
        response: httpx.Response = await request
    except httpx.TransportError as error:
        chain.answers.append((time.monotonic(), 0, time.monotonic() - started_at))
        chain.unexpected.append(
            f"no answer: {type(error).__name__} after {time.monotonic() - started_at:.1f} s"
        )
        return None
    chain.answers.append((time.monotonic(), response.status_code, time.monotonic() - started_at))
    if response.status_code == 503:
        if response.json().get("error") != "unavailable" or "retry-after" not in response.headers:
            chain.unexpected.append(f"503 {response.headers} {response.text}")
    elif response.status_code != 200:
        chain.unexpected.append(f"{response.status_code} {response.text}")
    return response


async def run_chain(instances: list[str], chain: Chain, stop: asyncio.Event, profile: bool) -> None:
    """Refresh (and read /profile), alternating instances, until `stop`; then until the last
    refresh succeeded. A 503 is retried with the same token, as a client should."""
    turn = 0
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=CLIENT_LIMITS) as http:
        while not (stop.is_set() and chain.last_refresh_ok):
            base = instances[turn % 2]
            turn += 1
            if profile:
                bearer = {"Authorization": f"Bearer {chain.access_token}"}
                await ask(chain, http.get(f"{base}/profile", headers=bearer))
            answer = await ask(
                chain, http.post(f"{base}/refresh", json={"refresh_token": chain.refresh_token})
            )
            chain.last_refresh_ok = answer is not None and answer.status_code == 200
            if answer is not None and answer.status_code == 200:
                chain.refresh_token = answer.json()["refresh_token"]
                chain.access_token = answer.json()["access_token"]
                chain.tokens.add(chain.refresh_token)
            elif answer is not None and answer.status_code != 503:
                return  # a 401 (reuse?) ends the chain: noted as unexpected
            else:
                # Paced, as a client honouring Retry-After would be (here faster than its 1 s,
                # to see when service resumes).
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def under_load(instances: list[str], *, profile: bool = True) -> Any:
    """CHAINS clients under way on both instances; the block is the fault. After it, the load
    goes on until each chain has refreshed REFRESHES_AFTER times more, then settles."""
    load = Load(await open_chains(instances, CHAINS))
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_chain(instances, chain, stop, profile)) for chain in load.chains
    ]
    try:
        await until(lambda: sum(len(c.answers) for c in load.chains) >= ANSWERS_BEFORE_FAULT)
        yield load
        marks = [len(chain.tokens) for chain in load.chains]
        await until(
            lambda: all(
                len(chain.tokens) >= mark + REFRESHES_AFTER or chain.unexpected
                for chain, mark in zip(load.chains, marks, strict=True)
            ),
            SETTLE_WITHIN,
        )
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), SETTLE_WITHIN)
    finally:
        for task in tasks:
            task.cancel()


async def until(condition: Any, seconds: float = SETTLE_WITHIN) -> None:
    """Return once `condition()` holds; fail after `seconds` (a deadline, not a speed check)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def chains_intact(url: str, chains: list[Chain]) -> None:
    """On the server at `url`: each chain's session holds exactly the refresh tokens its
    client was given (none lost, none extra), each with at most one child, none revoked."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT u.email, count(r.id) AS tokens, bool_or(s.revoked_at IS NOT NULL) AS revoked,"
            " count(DISTINCT r.parent_id) = count(r.parent_id) AS single_children"
            " FROM users u JOIN sessions s ON s.user_id = u.id"
            " JOIN refresh_tokens r ON r.session_id = s.id"
            " WHERE u.email = ANY($1::text[]) GROUP BY u.email",
            [chain.email for chain in chains],
        )
    finally:
        await connection.close()
    found = {row["email"]: row for row in rows}
    for chain in chains:
        row = found[chain.email]
        assert row["tokens"] == len(chain.tokens), (chain.email, row["tokens"], len(chain.tokens))
        assert not row["revoked"], f"{chain.email}'s session was revoked"
        assert row["single_children"], f"a token of {chain.email} has two children"


def report(name: str, load: Load, **extra: object) -> None:
    """What the test measured, printed once its assertions held (so no rotation was lost)."""
    first, last = load.window()
    answers = load.answers()
    unavailable = sum(1 for _, status, _ in answers if status == 503)
    slowest_after = max((took for at, _, took in answers if at >= load.fault_at), default=0.0)
    details = "".join(f", {key} {value}" for key, value in extra.items())
    print(
        f"\n{name}: {len(answers)} answers, {unavailable} 503 from {first:.1f} s to {last:.1f} s"
        f" after the fault, serving again after {load.serving_again():.1f} s, slowest answer"
        f" {load.slowest():.1f} s ({slowest_after:.1f} s after the fault), rotations"
        f" {sum(len(c.tokens) - 1 for c in load.chains)}, none lost{details}"
    )


async def listening(url: str) -> int:
    """How many sessions LISTEN to the feed on the server at `url`."""
    return int(
        await _fetchval(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
            " AND backend_type = 'client backend'",
        )
    )


async def until_cluster(condition: Callable[[], Awaitable[bool] | bool], seconds: float) -> None:
    """Like `until`, for a condition that asks the cluster (off the event loop when it is a
    blocking call, so the clients' answers are timed as they come)."""
    deadline = time.monotonic() + seconds
    while True:
        if inspect.iscoroutinefunction(condition):
            holds = await condition()
        else:
            holds = await asyncio.to_thread(condition)
        if holds:
            return
        assert time.monotonic() < deadline, "the cluster never got there"
        await asyncio.sleep(0.05)


async def _fetchval(url: str, query: str) -> Any:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


async def test_a_planned_switchover_under_load(healthy: Cluster, instances: list[str]) -> None:
    """`patronictl switchover` while 32 chains refresh and read /profile: 503s only, and for
    less than the TTL an unplanned failover would cost; nothing lost, every chain goes on."""
    _, standby = healthy.wait_healthy()
    async with under_load(instances) as load:
        load.fault_at = time.monotonic()
        switched = await asyncio.to_thread(healthy.switchover, standby)
        assert switched.returncode == 0, switched.stdout + switched.stderr
        await until_cluster(lambda: healthy.leader() is standby, PROMOTED_WITHIN)

    assert [problem for chain in load.chains for problem in chain.unexpected] == []
    assert load.statuses() <= {200, 503}
    assert all(chain.last_refresh_ok for chain in load.chains)
    await chains_intact(healthy.node_url(standby), load.chains)
    first, last = load.window()
    report("switchover", load)
    assert last - first < TTL, "the switchover cost as much as a failover"


async def test_the_standby_lost_writes_go_on(healthy: Cluster, instances: list[str]) -> None:
    """The synchronous standby's machine dies: with `synchronous_mode_strict: false` the
    primary's Patroni takes it out of synchronous_standby_names and commits go on alone after a
    pause of about a loop; no 503, nothing lost. (Strict mode would hold every write until a
    standby returns.)"""
    primary, standby = healthy.wait_healthy()
    async with under_load(instances, profile=False) as load:
        load.fault_at = time.monotonic()
        healthy.kill(standby)

        async def alone() -> bool:
            names = await _fetchval(healthy.node_url(primary), "SHOW synchronous_standby_names")
            return names == ""

        await until_cluster(alone, PROMOTED_WITHIN)
        alone_after = time.monotonic() - load.fault_at

    assert [problem for chain in load.chains for problem in chain.unexpected] == []
    assert load.statuses() == {200}
    assert all(chain.last_refresh_ok for chain in load.chains)
    await chains_intact(healthy.node_url(primary), load.chains)
    report("standby killed", load, primary_alone_after=f"{alone_after:.1f} s")


async def test_the_primary_machine_dies_under_load(
    healthy: Cluster, instances: list[str], settings: Settings
) -> None:
    """kill -9 of the primary's Patroni and postmaster together while 32 chains refresh and
    read /profile through two instances: Patroni promotes the synchronous standby; until then
    the service answers 503 with Retry-After, then serves again by itself; every rotation that
    answered 200 is on the new primary, every chain goes on; the feed's LISTEN follows."""
    old, standby = healthy.wait_healthy()
    old_url = healthy.node_url(old)
    db = await asyncpg.connect(old_url)
    try:
        credentials = await create_client(db, settings, scope=FEED_SCOPE)
    finally:
        await db.close()
    # The feed's first read opens each instance's LISTEN, here on the primary about to die.
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
        for instance in instances:
            first = await http.get(f"{instance}/oauth/revocations", headers=basic(*credentials))
            assert first.status_code == 200, first.text

    async def both_listen_on_the_old_primary() -> bool:
        return await listening(old_url) >= 2

    await until_cluster(both_listen_on_the_old_primary, SETTLE_WITHIN)
    async with under_load(instances) as load:
        load.fault_at = time.monotonic()
        healthy.kill(old)
        await until_cluster(lambda: healthy.leader() is standby, PROMOTED_WITHIN)
        promoted = time.monotonic() - load.fault_at
    new_url = healthy.node_url(standby)

    assert [problem for chain in load.chains for problem in chain.unexpected] == []
    assert load.statuses() == {200, 503}, "no 503: the fault was not met"
    assert all(chain.last_refresh_ok for chain in load.chains)
    await chains_intact(new_url, load.chains)

    # Revocations after the failover reach a follower of the other instance through the
    # LISTEN, now on the new primary (the poll interval is longer than the wait).

    async def both_listen_on_the_new_primary() -> bool:
        return await listening(new_url) >= 2

    await until_cluster(both_listen_on_the_new_primary, SETTLE_WITHIN)
    async with httpx.AsyncClient(timeout=FEED_WAIT + CLIENT_TIMEOUT) as http:
        start = await http.get(f"{instances[1]}/oauth/revocations", headers=basic(*credentials))
        assert start.status_code == 200, start.text
        follower = asyncio.create_task(
            http.get(
                f"{instances[1]}/oauth/revocations",
                params={"after": start.json()["cursor"], "wait": FEED_WAIT},
                headers=basic(*credentials),
            )
        )
        revoked_at = time.monotonic()
        logout = await http.post(
            f"{instances[0]}/logout", json={"refresh_token": load.chains[0].refresh_token}
        )
        fed = await follower
        delivered = time.monotonic() - revoked_at
    assert logout.status_code == 204, logout.text
    assert fed.status_code == 200, fed.text
    assert len(fed.json()["sessions"]) == 1
    report("primary killed", load, promoted=f"{promoted:.1f} s", feed=f"{delivered:.2f} s")


def test_the_operations_guide_shows_the_patroni_settings_tested_here() -> None:
    """docs/operations.md's Patroni settings are the ones tests/patroni.py runs."""
    guide = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    dcs = patroni_config(
        Node("node1", 5432, 8008, Path("/data"), Path("/node1.yml"), Path("/node1.log")),
        "127.0.0.1:2379",
        Path("/run"),
    )["bootstrap"]
    assert isinstance(dcs, dict)
    settings = dcs["dcs"]

    for name in (
        "ttl",
        "loop_wait",
        "retry_timeout",
        "synchronous_mode",
        "synchronous_mode_strict",
        "maximum_lag_on_failover",
    ):
        value = json.dumps(settings[name])
        assert f"\n{name}: {value} " in guide or f"\n{name}: {value}\n" in guide, name
    assert "use_pg_rewind: true" in guide
    assert "?target_session_attrs=read-write" in guide
