"""Where one `/refresh` spends its time, in the service and in the bare prototype, side by side.

Both apps are called in this process (no HTTP, no client), alternately, request by request, on
one migrated database: for each request, the time until the last byte of the answer was handed
over, and the part of it spent holding a pool connection (the statements, their round trips,
the commit's WAL flush). The rest is the Python on the request's path: parsing, tokens,
middleware, the answer. What the service's one-statement rotation can gain over the
prototype's five round trips on this machine is the difference of the first parts; the report
also gives the ratio the service would reach if its own part cost what the prototype's does.

    .venv/bin/python -m bench.refresh_path [--rounds 5] [--requests 400]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import statistics
import sys
import time
from types import TracebackType
from typing import Any

import uvloop
from tokenrota_server import telemetry
from tokenrota_server.asgi import create_from_environment

from bench.__main__ import production_environment
from bench.databases import migrated_database
from bench.in_process import lifespan, request

PASSWORD = "correct horse battery"


class _TimedAcquire:
    def __init__(self, inner: Any, spent: list[float]) -> None:
        self._inner, self._spent, self._started = inner, spent, 0.0

    async def __aenter__(self) -> Any:
        self._started = time.perf_counter()
        return await self._inner.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        answer = await self._inner.__aexit__(kind, error, traceback)
        self._spent[0] += time.perf_counter() - self._started
        return answer


class TimedPool:
    """An asyncpg pool whose `acquire()` blocks add the time they held a connection to `spent`."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.spent = pool, [0.0]

    def acquire(self, *args: Any, **kwargs: Any) -> _TimedAcquire:
        return _TimedAcquire(self.pool.acquire(*args, **kwargs), self.spent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


async def post(
    app: Any, state: dict[str, Any], path: str, body: dict[str, Any]
) -> tuple[Any, float]:
    """POST `body` as JSON to `app`; its answer's JSON and the seconds until its last byte."""
    raw = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    status, answer, seconds = await request(app, state, "POST", path, headers, raw)
    if not 200 <= status < 300:
        raise RuntimeError(f"{path} answered {status}: {answer!r}")
    return json.loads(answer), seconds


def prototype(environment: dict[str, str]) -> Any:
    """bench.prototype, imported under `environment` (it reads its settings at import)."""
    os.environ.update(environment)
    return importlib.import_module("bench.prototype")


async def measure(rounds: int, requests: int) -> None:
    async with migrated_database() as url:
        environment = production_environment("https://bench.tokenrota.invalid", DATABASE_URL=url)
        os.environ.update(environment)
        ours, theirs = create_from_environment(), prototype(environment)
        # Our access line, as in production, written to /dev/null.
        telemetry.configure_logging("INFO")
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
        with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - once, before measuring
            for handler in handlers:
                handler.setStream(devnull)
            try:
                await compare(ours, theirs, rounds, requests)
            finally:
                for handler in handlers:
                    handler.setStream(sys.stderr)


async def compare(ours: Any, theirs: Any, rounds: int, requests: int) -> None:
    """Measure `rounds` rounds of `requests` refreshes on each app, alternating."""
    async with lifespan(ours) as our_state, lifespan(theirs.app) as their_state:
        our_state["pool"] = TimedPool(our_state["pool"])
        theirs.pool = TimedPool(theirs.pool)
        credentials = {"email": "path@example.com", "password": PASSWORD}
        await post(ours, our_state, "/register", credentials)
        chains = {}
        for name in ("ours", "prototype"):
            pair, _ = await post(ours, our_state, "/login", credentials)
            chains[name] = pair["refresh_token"]
        apps = {
            "ours": (ours, our_state, our_state["pool"]),
            "prototype": (theirs.app, their_state, theirs.pool),
        }

        async def refresh(name: str) -> tuple[float, float]:
            app, state, pool = apps[name]
            held_before = pool.spent[0]
            answer, seconds = await post(app, state, "/refresh", {"refresh_token": chains[name]})
            chains[name] = answer["refresh_token"]
            return seconds, pool.spent[0] - held_before

        for name in apps:  # warm: statements prepared, generic plans chosen
            for _ in range(50):
                await refresh(name)
        print(f"POST /refresh in-process, {rounds} rounds of {requests} per app, alternating;")
        print("medians in ms: whole request | holding a connection | the rest")
        ratios, ceilings = [], []
        for round_number in range(rounds):
            samples: dict[str, list[tuple[float, float]]] = {"ours": [], "prototype": []}
            for index in range(requests * 2):
                name = ("ours", "prototype")[(index + round_number) % 2]
                samples[name].append(await refresh(name))
            medians = {name: _medians(values) for name, values in samples.items()}
            (ours_total, ours_db, ours_rest) = medians["ours"]
            (their_total, their_db, their_rest) = medians["prototype"]
            ratios.append(their_total / ours_total)
            ceilings.append((their_db + their_rest) / (ours_db + their_rest))
            print(
                f"  round {round_number + 1}: ours {ours_total:.3f} | {ours_db:.3f} |"
                f" {ours_rest:.3f}   prototype {their_total:.3f} | {their_db:.3f} |"
                f" {their_rest:.3f}"
            )
        print(f"ours at {_spread(ratios)}x the prototype's rate (1/median)")
        print(f"ours if its own part cost the prototype's: {_spread(ceilings)}x")


def _medians(values: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Median whole time, time holding a connection, and the rest, in ms."""

    def median(column: list[float]) -> float:
        return statistics.median(column) * 1000

    return (
        median([total for total, _ in values]),
        median([held for _, held in values]),
        median([total - held for total, held in values]),
    )


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400, help="per app and round")
    options = parser.parse_args()
    # uvloop, as both servers run under uvicorn.
    uvloop.run(measure(options.rounds, options.requests))


if __name__ == "__main__":
    main()
