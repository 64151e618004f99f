"""What the request middleware (request id, metrics, JSON access log) costs per request.

Drives the ASGI app directly, with no network, so the difference between the runs is the
middleware: GET /healthz (no database) and GET /profile (a token check and one query), each with
the middleware stripped, with it and logging off, and with it writing JSON lines to /dev/null.
Runs are interleaved, and the best of several rounds is kept, to damp the noise of a shared box.

    .venv/bin/python -m bench.middleware_overhead
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import statistics
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from starlette.datastructures import Secret
from starlette.middleware import Middleware
from tokenrota_server.app import create_app
from tokenrota_server.auth import DeviceInfo
from tokenrota_server.config import Settings
from tokenrota_server.http.middleware import RequestObservability
from tokenrota_server.telemetry import JsonFormatter

from bench.databases import migrated_database
from bench.in_process import request

REQUESTS = 3000
ROUNDS = 5


async def call(
    app: Any, state: Mapping[str, Any], path: str, headers: list[tuple[bytes, bytes]]
) -> int:
    status, _, _ = await request(app, state, "GET", path, headers)
    return status


async def per_request_us(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    for _ in range(REQUESTS):
        await run()
    return (time.perf_counter() - started) / REQUESTS * 1e6


async def main() -> None:
    async with migrated_database() as url:
        await measure(url)


def observes(middleware: Middleware) -> bool:
    """Whether `middleware` is the request id, metrics and access log one (RequestObservability)."""
    factory = middleware.cls
    return isinstance(factory, type) and issubclass(factory, RequestObservability)


async def measure(url: str) -> None:
    settings = Settings(
        access_token_secret=Secret(secrets.token_urlsafe(48)),
        refresh_token_secret=Secret(secrets.token_urlsafe(48)),
        env="test",
        database_url=url,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        argon2_parallelism=1,
    )
    with_middleware = create_app(settings)
    without = create_app(settings)
    without.user_middleware = [m for m in without.user_middleware if not observes(m)]
    devnull = logging.FileHandler(os.devnull)
    devnull.setFormatter(JsonFormatter())
    async with with_middleware.router.lifespan_context(with_middleware) as lifespan_state:
        state: Mapping[str, Any] = lifespan_state or {}
        auth, pool, now = state["auth"], state["pool"], state["clock"]()
        user = await auth.register(
            pool, email="bench@example.com", password="bench password", now=now, ip=None
        )
        pair = await auth.login(
            pool, email=user.email, password="bench password", now=now, device=DeviceInfo()
        )
        bearer = [(b"authorization", f"Bearer {pair.access_token}".encode())]
        results: dict[str, list[float]] = {}
        for path, headers in (("/healthz", []), ("/profile", bearer)):
            assert await call(without, state, path, headers) == 200
            for _ in range(ROUNDS):
                for label, app, level in (
                    ("no middleware", without, logging.WARNING),
                    ("middleware, logs off", with_middleware, logging.WARNING),
                    ("middleware, JSON logs", with_middleware, logging.INFO),
                ):
                    root = logging.getLogger()
                    root.handlers[:] = [devnull]
                    root.setLevel(level)
                    micros = await per_request_us(partial(call, app, state, path, headers))
                    results.setdefault(f"{path:9} {label}", []).append(micros)
        logging.getLogger().setLevel(logging.WARNING)
        for key, values in results.items():
            best, median = min(values), statistics.median(values)
            print(f"{key:40} best {best:7.1f} us   median {median:7.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
