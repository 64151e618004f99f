"""The request middleware: request id, one JSON access-log line, and the metrics.

Plain ASGI rather than `BaseHTTPMiddleware`: it wraps `send` to see the status and add the
`X-Request-ID` header, and otherwise stays out of the way, so it costs microseconds per request.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenrota_server import telemetry
from tokenrota_server.http import metrics
from tokenrota_server.http.limits import BODY_TIMED_OUT
from tokenrota_server.http.remote_address import remote_address

access_log = logging.getLogger("tokenrota.access")

REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept only if it is short and plain, so it cannot forge log lines or bloat them.
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
# Requests that match no route share one label: raw paths would let anyone grow the label set.
UNMATCHED_ROUTE = "<unmatched>"
# nginx's "client closed request": the client went away before its request was read, so there
# was no one to answer. Not a server error.
CLIENT_CLOSED_REQUEST = 499


class RequestObservability:
    """Gives each HTTP request an id and context; logs and counts it when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        telemetry.watch_security_events()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope["headers"])
        context = telemetry.RequestContext(request_id)
        status = 500  # what the server error middleware will answer if the app raises
        echoed = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        token = telemetry.enter(context)
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # Raised by reading a body whose client left (or stalled past BODY_READ_TIMEOUT):
            # nothing to answer, and no traceback, since nothing here went wrong.
            status = 408 if scope.get(BODY_TIMED_OUT) else CLIENT_CLOSED_REQUEST
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", UNMATCHED_ROUTE)
            metrics.record_request(scope["method"], template, status, seconds, context)
            state: Any = scope.get("state") or {}
            metrics.observe_pool_now_and_then(state.get("pool"))
            if access_log.isEnabledFor(logging.INFO):
                _log_request(scope, template, status, seconds, context)
            telemetry.leave(token)


def _log_request(
    scope: Scope, route: str, status: int, seconds: float, context: telemetry.RequestContext
) -> None:
    state = scope.get("state") or {}
    settings = state.get("settings")
    # Behind TRUSTED_PROXIES, the address the throttle and sessions see, not the proxy's.
    address = remote_address(Request(scope), settings) if settings is not None else None
    telemetry.log_info(
        access_log,
        "request",
        {
            "request_id": context.request_id,
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "client_ip": address,
            "user_id": context.user_id,
            "client_id": context.client_id,
            "session_id": context.session_id,
        },
    )


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SAFE_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    # 128 random bits, as a uuid4 has, at a tenth of its cost.
    return os.urandom(16).hex()
