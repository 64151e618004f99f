"""Three `tokenrota serve` instances on one database behind haproxy (tests/fleet.py).

The database decides every race, so the fleet behaves as one service: one refresh token sent to
all three at once has one child; the login throttle counts across them; one instance killed
under load costs clients no 5xx but 503 and, for clients that retry as docs/operations.md
says, no chain.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import httpx

from tests.e2e.test_faults import Chain, chain_invariants, open_chains, run_chain
from tests.fleet import UNAVAILABLE, haproxy_config, running_fleet
from tests.support import PASSWORD, PROJECT_ROOT

COPIES_PER_INSTANCE = 8
EMAIL_LIMIT = 5
GUESSES_PER_INSTANCE = 10
CLIENTS = 16
# Answers the clients must have had before the kill (a deadline-free start).
ANSWERS_BEFORE_KILL = 4 * CLIENTS
AFTER_KILL = 3.0


async def test_one_refresh_token_sent_to_all_three_at_once_has_one_child(
    database_url: str, tmp_path: Path
) -> None:
    """Copies of one refresh token raced to every instance: all get the same child (the grace
    window), the token has exactly one child row, and the session lives on."""
    with running_fleet(database_url, tmp_path) as fleet:
        chain = (await open_chains(fleet.url, 1))[0]
        clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in fleet.instances]
        try:
            answers = await asyncio.gather(
                *(
                    instance.post("/refresh", json={"refresh_token": chain.refresh_token})
                    for instance in clients
                    for _ in range(COPIES_PER_INSTANCE)
                )
            )
        finally:
            for instance in clients:
                await instance.aclose()

    assert [answer.status_code for answer in answers] == [200] * len(answers)
    assert len({answer.json()["refresh_token"] for answer in answers}) == 1
    connection = await asyncpg.connect(database_url)
    try:
        children = await connection.fetchval(
            "SELECT count(*) FROM refresh_tokens c JOIN refresh_tokens p ON c.parent_id = p.id"
            " JOIN sessions s ON s.id = p.session_id JOIN users u ON u.id = s.user_id"
            " WHERE u.email = $1",
            chain.email,
        )
        revoked = await connection.fetchval(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL"
        )
    finally:
        await connection.close()
    assert children == 1
    assert revoked == 0


async def test_the_login_throttle_counts_across_instances(
    database_url: str, tmp_path: Path
) -> None:
    """Wrong passwords for one email raced to all three instances: exactly the limit get 401,
    the rest 429; then the right password through the proxy is refused too."""
    with running_fleet(database_url, tmp_path, LOGIN_EMAIL_MAX_ATTEMPTS=str(EMAIL_LIMIT)) as fleet:
        chain = (await open_chains(fleet.url, 1))[0]
        wrong = {"email": chain.email, "password": "not the password"}
        clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in fleet.instances]
        try:
            answers = await asyncio.gather(
                *(
                    instance.post("/login", json=wrong)
                    for instance in clients
                    for _ in range(GUESSES_PER_INSTANCE)
                )
            )
        finally:
            for instance in clients:
                await instance.aclose()
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as proxied:
            right = await proxied.post("/login", json={"email": chain.email, "password": PASSWORD})

    statuses = sorted(answer.status_code for answer in answers)
    # open_chains logged in once with the right password, which resets the counter.
    assert statuses == [401] * EMAIL_LIMIT + [429] * (3 * GUESSES_PER_INSTANCE - EMAIL_LIMIT)
    assert right.status_code == 429


async def test_one_instance_killed_under_load(database_url: str, tmp_path: Path) -> None:
    """SIGKILL one instance while 16 clients refresh and read /profile through the proxy: the
    clients see 200 and at most 503 (haproxy retries the cut requests on another instance);
    every chain goes on, a client retrying a lost answer or a 503 as documented, and no token
    has two children or a session two live tokens."""
    with running_fleet(database_url, tmp_path) as fleet:
        chains = await open_chains(fleet.url, CLIENTS)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_chain(fleet.url, chain, stop, True)) for chain in chains]
        try:
            # Under way first: every client has had answers (their first requests set up TLS
            # contexts and connections, slow on a busy machine).
            await answers_seen(chains, ANSWERS_BEFORE_KILL)
            fleet.processes[0].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.sleep(AFTER_KILL)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        assert fleet.processes[0].poll() is not None, "the instance was not killed"
        stats = fleet.backend_stats()

    retried = int(stats["BACKEND"]["wretr"] or 0) + int(stats["BACKEND"]["wredis"] or 0)

    await chain_invariants(database_url, CLIENTS)
    statuses = [status for chain in chains for status in chain.statuses]
    after = [status for chain in chains for at, status in chain.timeline if at > killed_at]
    before = len(statuses) - len(after)
    print(
        f"\none of three instances killed: {len(statuses)} answers, {statuses.count(503)} 503, "
        f"{sum(chain.transport_errors for chain in chains)} transport errors, "
        f"{sum(chain.refreshes for chain in chains)} refreshes; {before} answers before the kill, "
        f"{len(after)} after; "
        f"haproxy: {retried} retries + redispatches, instance1 {stats['instance1']['status']}"
    )
    assert stats["instance1"]["status"].startswith("DOWN"), stats["instance1"]["status"]
    assert retried > 0, "no request was in flight on the killed instance: the fault went untested"
    assert set(statuses) <= {200, 503}, set(statuses)
    assert after.count(200) > 0, "no answer after the kill: the fault was not survived"
    assert [chain.email for chain in chains if not chain.last_refresh_ok] == []


async def answers_seen(chains: list[Chain], count: int) -> None:
    """Return once the chains have had `count` answers between them."""
    while True:
        if sum(len(chain.statuses) for chain in chains) >= count:
            return
        await asyncio.sleep(0.05)


def test_the_operations_guide_shows_the_haproxy_config_tested_here() -> None:
    """docs/operations.md's haproxy.cfg and error file are the ones these tests run."""
    guide = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    errors = Path("/etc/haproxy/tokenrota-503.http")

    config = haproxy_config(8000, 8404, [8001, 8002, 8003], errors)

    assert config in guide
    assert UNAVAILABLE.replace("\r\n", "\n") in guide
