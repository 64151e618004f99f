"""What DPoP costs: a bound `/refresh` beside a bearer one under the same load, and one proof
check at the service and at a resource server beside a plain bearer check.

1. Over HTTP: `tokenrota serve` in a child process, on a fresh database; `--chains` sessions of
   each kind refresh concurrently, each its own chain of `--refreshes` rotations a round, the
   kinds alternating round by round. The server's CPU time (from /proc, its process and any
   children) per refresh is the number compared: a wait for the shared CPU is not CPU time.
   The proofs of a round are signed before it starts, so the load generator's signing is not
   in the way of the server (nor, on these shared cores, in its CPU time at all).
2. In this process: the median of many single checks, in microseconds. At a resource server:
   `TokenVerifier.verify_request` with a bearer token, and with a bound token and its proof
   (signature, claims, ath, the replay cache). At the service: the proof's checks
   (`ProofChecker.check`) and the statement that records it once across instances, beside
   the service's own access-token check.

    .venv/bin/python -m bench.dpop_cost [--rounds 7] [--chains 16] [--refreshes 25]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from starlette.datastructures import Secret
from tokenrota.dpop import ProofKey
from tokenrota.verify import TokenVerifier
from tokenrota_server import dpop as server_dpop
from tokenrota_server.config import Settings
from tokenrota_server.dpop import ProofChecker
from tokenrota_server.tokens import TokenCodec

from bench.__main__ import free_port, production_environment, wait_until_up
from bench.databases import migrated_database
from bench.server_cpu import tree_cpu_seconds

ISSUER = "https://bench.tokenrota.invalid"
PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def server(database_url: str) -> AsyncIterator[tuple[str, int]]:
    """`tokenrota serve` (one worker) on `database_url`: its base URL and process id."""
    port = free_port()
    environment = production_environment(
        ISSUER,
        DATABASE_URL=database_url,
        PORT=str(port),
        LOGIN_EMAIL_MAX_ATTEMPTS="100000",
        LOGIN_IP_MAX_ATTEMPTS="100000",
        REGISTER_IP_MAX_ATTEMPTS="100000",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrota_server",
        "serve",
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        await wait_until_up(base_url)
        yield base_url, process.pid
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


class Chain:
    """One session's refresh chain; bound to `key` when it has one."""

    def __init__(self, refresh_token: str, key: ProofKey | None) -> None:
        self.refresh_token, self.key = refresh_token, key
        self.proofs: list[str] = []

    def sign(self, count: int) -> None:
        if self.key is not None:
            now = datetime.now(UTC)
            self.proofs = [
                self.key.proof("POST", f"{ISSUER}/refresh", now=now) for _ in range(count)
            ]

    async def run(self, http: httpx.AsyncClient, count: int) -> None:
        for index in range(count):
            headers = {"DPoP": self.proofs[index]} if self.key is not None else {}
            response = await http.post(
                "/refresh", json={"refresh_token": self.refresh_token}, headers=headers
            )
            if response.status_code != 200:
                raise RuntimeError(f"/refresh answered {response.status_code}: {response.text}")
            self.refresh_token = response.json()["refresh_token"]


async def refresh_cpu(rounds: int, chains: int, refreshes: int) -> None:
    async with migrated_database() as url, server(url) as (base_url, pid):
        limits = httpx.Limits(max_connections=chains * 2)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
            email = f"dpop-{secrets.token_hex(4)}@example.com"
            credentials = {"email": email, "password": PASSWORD}
            (await http.post("/register", json=credentials)).raise_for_status()
            kinds: dict[str, list[Chain]] = {"bearer": [], "dpop": []}
            for kind, group in kinds.items():
                for _ in range(chains):
                    key = ProofKey() if kind == "dpop" else None
                    headers = (
                        {"DPoP": key.proof("POST", f"{ISSUER}/login", now=datetime.now(UTC))}
                        if key is not None
                        else {}
                    )
                    answer = await http.post("/login", json=credentials, headers=headers)
                    answer.raise_for_status()
                    assert answer.json()["token_type"] == ("DPoP" if key else "Bearer")
                    group.append(Chain(answer.json()["refresh_token"], key))

            async def one_round(kind: str) -> float:
                """Server CPU microseconds per refresh over one round of `kind`."""
                for chain in kinds[kind]:
                    chain.sign(refreshes)
                before = tree_cpu_seconds(pid)
                await asyncio.gather(*(chain.run(http, refreshes) for chain in kinds[kind]))
                return (tree_cpu_seconds(pid) - before) / (chains * refreshes) * 1e6

            for kind in kinds:  # warm: statements prepared, plans chosen
                await one_round(kind)
            print(
                f"POST /refresh over HTTP: {chains} concurrent chains x {refreshes} refreshes"
                f" a round, {rounds} rounds per kind, alternating; server CPU per refresh:"
            )
            ratios: list[float] = []
            costs: dict[str, list[float]] = {"bearer": [], "dpop": []}
            for number in range(rounds):
                order = ("bearer", "dpop") if number % 2 == 0 else ("dpop", "bearer")
                spent = {kind: await one_round(kind) for kind in order}
                for kind, value in spent.items():
                    costs[kind].append(value)
                ratios.append(spent["dpop"] / spent["bearer"])
                print(
                    f"  round {number + 1}: bearer {spent['bearer']:.0f} us,"
                    f" dpop {spent['dpop']:.0f} us, ratio {ratios[-1]:.3f}"
                )
            print(
                f"median: bearer {statistics.median(costs['bearer']):.0f} us,"
                f" dpop {statistics.median(costs['dpop']):.0f} us;"
                f" dpop / bearer {_spread(ratios)}"
            )


async def check_costs(count: int) -> None:
    async with migrated_database() as url:
        settings = Settings(
            access_token_secret=Secret(secrets.token_urlsafe(48)),
            refresh_token_secret=Secret(secrets.token_urlsafe(48)),
            env="test",
            database_url=url,
            token_issuer=ISSUER,
            # A resource server's verifier is pinned to its own URI: the tokens are for it.
            token_audience="https://api.example",
        )
        codec, key = TokenCodec(settings), ProofKey()
        now = datetime.now(UTC).replace(microsecond=0)
        bearer, _ = codec.mint_access(subject="svc", client_id="svc", scope="read", now=now)
        bound, _ = codec.mint_access(
            subject="svc", client_id="svc", scope="read", now=now, jkt=key.jkt
        )
        api_url = "https://api.example/orders"
        verifier = TokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            secret=str(settings.access_token_secret),
        )
        print(f"one check, median of {count} (microseconds, this process):")

        api_proofs = iter(
            [key.proof("GET", api_url, now=now, access_token=bound) for _ in range(count)]
        )
        plain = await _timed_async(
            lambda: verifier.verify_request(
                "bearer", bearer, method="GET", url=api_url, proof=None
            ),
            count,
        )
        with_proof = await _timed_async(
            lambda: verifier.verify_request(
                "dpop", bound, method="GET", url=api_url, proof=next(api_proofs)
            ),
            count,
        )
        print(f"  resource server, tokenrota.verify, bearer token:     {plain:7.1f}")
        print(
            f"  resource server, tokenrota.verify, DPoP token+proof: {with_proof:7.1f}"
            f" ({with_proof / plain:.2f}x)"
        )

        checker = ProofChecker(ISSUER)
        service_proofs = [
            key.proof("GET", f"{ISSUER}/profile", now=now, access_token=bound) for _ in range(count)
        ]
        access = _timed(lambda: codec.verify_access(bearer, now), count)
        checked = iter(service_proofs)
        check = _timed(
            lambda: checker.check(
                [next(checked)], method="GET", path="/profile", now=now, access_token=bound
            ),
            count,
        )
        proofs = [
            checked_proof
            for proof in service_proofs
            if (
                checked_proof := checker.check(
                    [proof], method="GET", path="/profile", now=now, access_token=bound
                )
            )
            is not None
        ]
        connection = await asyncpg.connect(url)
        try:
            records = iter(proofs)
            record = await _timed_async(
                lambda: server_dpop.record(connection, next(records)), count
            )
        finally:
            await connection.close()
        print(f"  service, access-token check (TokenCodec):            {access:7.1f}")
        print(f"  service, proof checks (ProofChecker.check):          {check:7.1f}")
        print(f"  service, recording the proof once (INSERT, Postgres): {record:7.1f}")


def _timed(call: Callable[[], object], count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


async def _timed_async(call: Callable[[], Any], count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


async def run(options: argparse.Namespace) -> None:
    await check_costs(options.checks)
    await refresh_cpu(options.rounds, options.chains, options.refreshes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chains", type=int, default=16, help="concurrent sessions per kind")
    parser.add_argument("--refreshes", type=int, default=25, help="per chain and round")
    parser.add_argument("--checks", type=int, default=2000, help="single checks timed")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
