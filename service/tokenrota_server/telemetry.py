"""What a request leaves behind for operators: its context, and JSON log lines.

Each request runs with a `RequestContext` in a context variable (set by the middleware), so any
code on its path can say who the caller turned out to be (`annotate(user_id=...)`) and how its
use case ended (`record(refresh=RefreshOutcome.GRACE)`) without threading that through every
call. Security events logged to `tokenrota.security` with
`extra={"user_id": ..., "session_id": ...}` annotate the context on the way, and every log line
carries the request id.

The JSON renderer writes only the fields named in `LOGGED_FIELDS`: an `extra` that is not listed
never reaches the log, so a token or a password handed to a logger by mistake stays out of it.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from tokenrota_server.outcomes import Grant, LoginOutcome, RefreshOutcome

# The fields a log line may carry beyond time, level, logger and message.
LOGGED_FIELDS = (
    "request_id",
    "method",
    "route",
    "status",
    "duration_ms",
    "client_ip",
    "user_id",
    "client_id",
    "session_id",
    "event",
    "reason",
    "ip",
    "sessions",
    "outcome",
)
# Who a request's context can name.
IDENTITY_FIELDS = ("user_id", "client_id", "session_id")


@dataclass
class RequestContext:
    """One request's id, and what its handling learned about the caller and outcome."""

    request_id: str
    user_id: str | None = None
    client_id: str | None = None
    session_id: str | None = None
    login: LoginOutcome | None = None
    refresh: RefreshOutcome | None = None
    # The grant of the access token this request issued, if it issued one.
    issued: Grant | None = None


_current: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current() -> RequestContext | None:
    """The context of the request being handled, or None outside a request."""
    return _current.get()


def enter(context: RequestContext) -> object:
    """Make `context` current; hand the result to `leave` when the request ends."""
    return _current.set(context)


def leave(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def annotate(
    *,
    user_id: str | UUID | None = None,
    client_id: str | None = None,
    session_id: str | UUID | None = None,
) -> None:
    """Record on the current request who the caller is (no-op outside one); logged as text."""
    context = _current.get()
    if context is None:
        return
    # The first says who the caller is; a later event may name someone else (the session a user
    # revokes), which its own log line records.
    if context.user_id is None and user_id is not None:
        context.user_id = str(user_id)
    if context.client_id is None and client_id is not None:
        context.client_id = str(client_id)
    if context.session_id is None and session_id is not None:
        context.session_id = str(session_id)


def record(
    *,
    login: LoginOutcome | None = None,
    refresh: RefreshOutcome | None = None,
    issued: Grant | None = None,
) -> None:
    """Record on the current request how its use case ended (no-op outside one).

    A later record of the same kind replaces an earlier one: a handler records the outcome a
    failure before the use case would have (a rejected login), the use case the real one.
    """
    context = _current.get()
    if context is None:
        return
    if login is not None:
        context.login = login
    if refresh is not None:
        context.refresh = refresh
    if issued is not None:
        context.issued = issued


class _AnnotateFromSecurityEvents(logging.Filter):
    """Copies the ids of a security event onto the request it happened in."""

    def filter(self, record: logging.LogRecord) -> bool:
        annotate(**{name: getattr(record, name, None) for name in IDENTITY_FIELDS})
        context = _current.get()
        if context is not None:
            # Stamped now: the line may be rendered later, outside the request (a queue, a test).
            record.request_id = context.request_id
        return True


_SECURITY_FILTER = _AnnotateFromSecurityEvents()


def watch_security_events() -> None:
    """Attach the annotating filter to `tokenrota.security` (idempotent)."""
    security = logging.getLogger("tokenrota.security")
    if _SECURITY_FILTER not in security.filters:
        security.addFilter(_SECURITY_FILTER)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the listed fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            # Tells the workers of one `uvicorn --workers N` apart.
            "pid": record.process,
        }
        context = _current.get()
        if context is not None:
            line["request_id"] = context.request_id
        for name in LOGGED_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Send every log record, uvicorn's included, to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own handlers would print a second, plain copy; let records reach the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    watch_security_events()
