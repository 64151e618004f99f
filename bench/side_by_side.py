"""The service beside the bare prototype (bench/prototype.py), in one run, on one database.

Three servers run at once on the same database and secrets: the service with one worker, the
service with `--workers 2`, and the prototype (two more, and a delaying proxy, for the network
line). Each round measures them one after the other, in an order that alternates between rounds
(the machine is shared and noisy); a ratio is taken within a round, and the report gives the
median over rounds and the spread (lowest to highest):

- /refresh and /profile one request at a time through a raw keep-alive HTTP/1.1 client
  (bench/raw_http.py; httpx costs as much as the server here), p50 and p99, and the server's CPU
  time per request (/proc: the number noise disturbs least);
- optionally the same through httpx, to show what the client itself costs;
- /profile at 32 connections with `wrk`: requests/s, p50, p99, CPU per request;
- /refresh at 32 connections with `wrk`, one refresh chain per connection;
- the service's /profile with `--workers 2` against one worker, with `wrk`;
- /oauth/introspect at 32 connections on one worker (one process: one core), with `wrk`;
- optionally /refresh one at a time with Postgres behind a proxy that delays every chunk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
from argon2 import PasswordHasher

from bench import wrk
from bench.server_cpu import (
    command_name,
    cpu_seconds,
    parent_of,
    reaped_children_cpu_seconds,
    tree_cpu_seconds,
)
from bench.side_by_side_report import Results, Sample, report
from bench.side_by_side_servers import ROOT, Server, running

# Requests per server and round, one at a time: enough CPU ticks (10 ms each) to count.
REFRESHES, PROFILES, NETWORK_REFRESHES = 300, 600, 200
# Connections (and refresh chains) of the concurrent runs.
CONNECTIONS = 32


@dataclass(frozen=True)
class Options:
    """What `python -m bench` asks of the side-by-side run."""

    rounds: int
    wrk_seconds: int
    httpx_too: bool = False  # also time one at a time through httpx
    network_delay_ms: float = 0.0  # > 0: the network line, Postgres behind bench.latency_proxy


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def timed(call: Callable[[], Awaitable[None]], count: int, pid: int | None = None) -> Sample:
    """p50 and p99 (ms) of `count` calls one after the other, and with `pid` that process's CPU
    time per call (ms)."""
    samples = []
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    result = {"p50": statistics.median(samples) * 1000, "p99": percentile(samples, 0.99) * 1000}
    if pid is not None:
        result["cpu"] = (cpu_seconds(pid) - cpu_before) / count * 1000
    return result


async def wrk_with_cpu(server: Server, run: Awaitable[Sample], postmaster: int | None) -> Sample:
    """A wrk run on `server`, with the CPU time per request (ms) of the server (all its
    processes: a supervisor's workers too), of wrk itself and, with the `postmaster` of a local
    database, of Postgres (every backend, the other servers' idle ones included)."""
    before = tree_cpu_seconds(server.process.pid)
    wrk_before = reaped_children_cpu_seconds()
    postgres_before = tree_cpu_seconds(postmaster) if postmaster is not None else 0.0
    sample = await run
    requests = sample["requests"]
    sample["cpu"] = (tree_cpu_seconds(server.process.pid) - before) / requests * 1000
    sample["wrk cpu"] = (reaped_children_cpu_seconds() - wrk_before) / requests * 1000
    if postmaster is not None:
        sample["postgres cpu"] = (tree_cpu_seconds(postmaster) - postgres_before) / requests * 1000
    return sample


async def local_postmaster(connection: asyncpg.Connection) -> int | None:
    """The pid of the Postgres server behind `connection` if it runs on this machine, else None
    (BENCH_DATABASE_URL may name another machine, where /proc cannot see it)."""
    backend = await connection.fetchval("SELECT pg_backend_pid()")
    try:
        postmaster = parent_of(backend)
        return postmaster if command_name(postmaster) in ("postgres", "postmaster") else None
    except OSError:
        return None


async def compare(database_url: str, environment: dict[str, str], options: Options) -> None:
    """Start the servers on `database_url`, measure `options.rounds` rounds, print the report."""
    async with running(database_url, environment, options.network_delay_ms) as servers:
        results = await measure(servers, database_url, options)
    # Every round's numbers, for whoever wants to see which round a spread's end came from.
    (ROOT / ".data" / "bench-side-by-side.json").write_text(json.dumps(results, indent=1))
    report(results, options.rounds, options.wrk_seconds, options.network_delay_ms)


async def measure(servers: dict[str, Server], database_url: str, options: Options) -> Results:
    client_id, secret = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex + uuid.uuid4().hex
    connection = await asyncpg.connect(database_url)
    await connection.execute(
        "INSERT INTO clients (client_id, name, secret_hash, scopes) VALUES ($1, 'bench', $2, $3)",
        client_id,
        PasswordHasher().hash(secret),
        ["read"],
    )
    postmaster = await local_postmaster(connection)
    await connection.close()
    base = {name: server.base for name, server in servers.items()}
    async with httpx.AsyncClient(timeout=60) as client:
        email, password = f"side-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
        credentials = {"email": email, "password": password}
        (await client.post(f"{base['ours']}/register", json=credentials)).raise_for_status()
        logins = asyncio.Semaphore(2)  # argon2 takes a core: two at a time on two workers

        async def new_chain() -> str:
            async with logins:
                answer = await client.post(f"{base['ours x2']}/login", json=credentials)
            answer.raise_for_status()
            return str(answer.json()["refresh_token"])

        pair = (await client.post(f"{base['ours']}/login", json=credentials)).json()
        # Renewed by every refresh of the service's own chain: a run longer than the access
        # tokens' 15 minutes (a loaded machine) keeps a live one.
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        # One refresh chain per server and client, and per wrk connection per round (wrk's
        # runs end with their chains' last answers unread, so each round needs fresh ones);
        # the service's login makes the prototype's tokens too.
        one_at_a_time = [*servers, "ours httpx", "prototype httpx"]
        chains = {name: await new_chain() for name in one_at_a_time}
        wrk_chains = {
            (round_number, name): await asyncio.gather(*(new_chain() for _ in range(CONNECTIONS)))
            for round_number in range(options.rounds)
            for name in ("ours", "prototype")
        }

        def refresher(name: str) -> Callable[[], Awaitable[None]]:
            server = servers[name]

            async def call() -> None:
                answer = await server.client.json(
                    "POST", "/refresh", json_body={"refresh_token": chains[name]}
                )
                chains[name] = answer["refresh_token"]
                if name == "ours":
                    bearer["Authorization"] = f"Bearer {answer['access_token']}"

            return call

        def profiler(name: str) -> Callable[[], Awaitable[None]]:
            server = servers[name]

            async def call() -> None:
                await server.client.json("GET", "/profile", headers=bearer)

            return call

        def httpx_refresher(name: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                key = f"{name} httpx"
                answer = await client.post(
                    f"{base[name]}/refresh", json={"refresh_token": chains[key]}
                )
                answer.raise_for_status()
                chains[key] = answer.json()["refresh_token"]

            return call

        def httpx_profiler(name: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                (await client.get(f"{base[name]}/profile", headers=bearer)).raise_for_status()

            return call

        # Warm the pools, statement caches and connections; wrk reaches both of x2's workers.
        for name in servers:
            await timed(refresher(name), 30)
            await timed(profiler(name), 30)
        for name in ("ours", "prototype") if options.httpx_too else ():
            await timed(httpx_refresher(name), 30)
            await timed(httpx_profiler(name), 30)
        for name in ("ours", "ours x2", "prototype"):
            await wrk.fixed(f"{base[name]}/profile", 1, headers=bearer)
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        introspect_headers = {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        }

        async def authenticate_client() -> None:
            """One introspection: it pays the argon2 check of the client's secret, which the
            service then remembers for 60 s (oauth.VERIFIED_CLIENT_TTL). Made before each wrk
            run, so that the memory cannot lapse during one: the wrk run then measures
            introspection alone, not one argon2 check (which the 32 requests in flight would
            share, as the service runs one check per secret at a time)."""
            answer = await client.post(
                f"{base['ours']}/oauth/introspect",
                data={"token": pair["access_token"]},
                headers={"Authorization": f"Basic {basic}"},
            )
            answer.raise_for_status()

        results: Results = {}

        def keep(key: str, sample: Sample) -> None:
            results.setdefault(key, []).append(sample)

        seconds = options.wrk_seconds
        for round_number in range(options.rounds):
            pair_order = ["ours", "prototype"]
            if round_number % 2:
                pair_order.reverse()
            for name in pair_order:
                pid = servers[name].process.pid
                await servers[name].client.ready()
                keep(f"refresh {name}", await timed(refresher(name), REFRESHES, pid))
                keep(f"profile {name}", await timed(profiler(name), PROFILES, pid))
                if options.httpx_too:
                    keep(f"httpx refresh {name}", await timed(httpx_refresher(name), REFRESHES))
                    keep(f"httpx profile {name}", await timed(httpx_profiler(name), PROFILES))
            if "ours net" in servers:
                for name in pair_order:
                    await servers[f"{name} net"].client.ready()
                    call = refresher(f"{name} net")
                    keep(f"net refresh {name}", await timed(call, NETWORK_REFRESHES))
            # The prototype and one worker, one worker and two: each pair next to each other,
            # in an order that alternates.
            profile_order = ["prototype", "ours", "ours x2"]
            if round_number % 2:
                profile_order.reverse()
            for name in profile_order:
                run = wrk.fixed(f"{base[name]}/profile", seconds, headers=bearer)
                keep(f"wrk {name}", await wrk_with_cpu(servers[name], run, postmaster))
            for name in pair_order:
                tokens = wrk_chains[(round_number, name)]
                run = wrk.refresh_chains(f"{base[name]}/refresh", seconds, tokens)
                keep(f"wrk refresh {name}", await wrk_with_cpu(servers[name], run, postmaster))
            await authenticate_client()
            run = wrk.fixed(
                f"{base['ours']}/oauth/introspect",
                seconds,
                headers=introspect_headers,
                body=f"token={bearer['Authorization'].removeprefix('Bearer ')}",
            )
            keep("introspect", await wrk_with_cpu(servers["ours"], run, postmaster))
    return results
