"""Prometheus metrics and `GET /metrics`.

Counted per request by the middleware, from the route template (never the raw path, so the label
set stays small), the status, and the typed outcomes its use case recorded on the request context
(`telemetry.record(login=..., refresh=..., issued=...)`, see `outcomes`).

With `uvicorn --workers N`, set `PROMETHEUS_MULTIPROC_DIR` to an empty directory that every worker
can write: prometheus-client then keeps each worker's values in files there, and `/metrics`, in
whichever worker answers, adds them all up. prometheus-client reads that variable itself, when
this module is imported.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tokenrota.clock import monotonic

from tokenrota_server.db.pool import FirstComeFirstServed
from tokenrota_server.outcomes import Grant, LoginOutcome, RefreshOutcome
from tokenrota_server.state import AppState
from tokenrota_server.telemetry import RequestContext

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# The `_created` timestamp series double the output and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUESTS = Counter(
    "token_service_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "token_service_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method and route template.",
    ["method", "route"],
    # From a cached token check (~1 ms) to an argon2 login under load (~1 s).
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOGINS = Counter(
    "token_service_logins_total",
    "Login attempts: success, failure (wrong credentials), throttled, rejected (bad request).",
    ["outcome"],
)
REFRESHES = Counter(
    "token_service_refreshes_total",
    "Refresh attempts: rotated, grace (same child again), reuse_detected (session revoked), "
    "invalid, unrotated (rotation switched off).",
    ["outcome"],
)
TOKENS_ISSUED = Counter(
    "token_service_tokens_issued_total",
    "Access tokens issued, by grant: login, refresh_token, client_credentials, token_exchange.",
    ["grant"],
)
# "livesum": with several workers, the sum over the workers alive now.
POOL_SIZE = Gauge(
    "token_service_db_pool_connections",
    "Open connections in the database pool.",
    multiprocess_mode="livesum",
)
POOL_IDLE = Gauge(
    "token_service_db_pool_idle_connections",
    "Open connections in the pool not lent to a request.",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "token_service_db_pool_waiting_acquirers",
    "Requests waiting for a pool connection because all are lent out.",
    multiprocess_mode="livesum",
)

# Every outcome is exported from the start, at 0, so that rate() sees the first event; the
# children are looked up once, as `labels()` costs several microseconds per call.
_LOGINS = {outcome: LOGINS.labels(outcome) for outcome in LoginOutcome}
_REFRESHES = {outcome: REFRESHES.labels(outcome) for outcome in RefreshOutcome}
_TOKENS_ISSUED = {grant: TOKENS_ISSUED.labels(grant) for grant in Grant}

# Methods outside this set share one label, or any caller could grow the label set at will.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The labelled children of each method, route and status, looked up once.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def record_request(
    method: str, route: str, status: int, seconds: float, context: RequestContext
) -> None:
    """Count one answered request, and the login, refresh and grant its use case recorded."""
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        label = method if method in _KNOWN_METHODS else "OTHER"
        children = (REQUESTS.labels(label, route, str(status)), LATENCY.labels(label, route))
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)
    if status >= 500:
        # The outcome of a request that failed on our side is unknown, whatever was recorded.
        return
    if context.login is not None:
        _LOGINS[context.login].inc()
    if context.refresh is not None:
        _REFRESHES[context.refresh].inc()
    if context.issued is not None and 200 <= status < 300:
        _TOKENS_ISSUED[context.issued].inc()


_pool_observed_at = 0.0


def observe_pool_now_and_then(pool: asyncpg.Pool | None) -> None:
    """`observe_pool`, at most once a second: per request it would cost more than it tells.

    In multiprocess mode the gauges of a worker are what it last observed, so each worker
    refreshes them as it serves; /metrics also observes the answering worker's pool itself.
    """
    global _pool_observed_at
    moment = monotonic()
    if moment - _pool_observed_at >= 1.0:
        _pool_observed_at = moment
        observe_pool(pool)


def observe_pool(pool: asyncpg.Pool | None) -> None:
    """Set the pool gauges from `pool` as it is now."""
    if pool is None:
        return
    POOL_SIZE.set(pool.get_size())
    POOL_IDLE.set(pool.get_idle_size())
    POOL_WAITING.set(_waiting_acquirers(pool))


def _waiting_acquirers(pool: asyncpg.Pool) -> int:
    # asyncpg has no public count of waiters; the service's pools count theirs
    # (`database.FirstComeFirstServed`). For a stock asyncpg pool, its holder queue is an asyncio
    # queue whose pending getters are the acquirers waiting. Zero if that internal ever changes.
    queue: Any = getattr(pool, "_queue", None)
    if isinstance(queue, FirstComeFirstServed):
        return queue.waiting
    getters = getattr(queue, "_getters", ())
    return sum(1 for getter in getters if not getter.done())


def forget_this_process() -> None:
    """In multiprocess mode, drop this worker's live gauges when it stops."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


async def metrics(request: Request[AppState]) -> Response:
    """Every metric in the Prometheus text format."""
    observe_pool(request.state["pool"])
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
