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
import os
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
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
# Made once: json.dumps builds a new encoder on every call that passes an argument.
_LINE_JSON = json.JSONEncoder(ensure_ascii=False)
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
        return render_line(
            created=record.created,
            level=record.levelname.lower(),
            logger=record.name,
            message=record.getMessage(),
            pid=record.process,
            # A record's extras are its attributes: the same as getattr for the listed names.
            fields=record.__dict__,
            exception=self.formatException(record.exc_info) if record.exc_info else None,
        )


def render_line(
    *,
    created: float,
    level: str,
    logger: str,
    message: str,
    pid: int | None,
    fields: Mapping[str, object],
    exception: str | None = None,
) -> str:
    """The JSON log line of one event; of `fields`, only the names in `LOGGED_FIELDS` are kept."""
    line: dict[str, object] = {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
        # Tells the workers of one `uvicorn --workers N` apart.
        "pid": pid,
    }
    context = _current.get()
    if context is not None:
        line["request_id"] = context.request_id
    for name in LOGGED_FIELDS:
        value = fields.get(name)
        if value is not None:
            line[name] = value if isinstance(value, int | float | bool) else str(value)
    if exception is not None:
        line["exception"] = exception
    return _LINE_JSON.encode(line)


# The handler `configure_logging` installed on the root logger, if it did.
_json_handler: logging.StreamHandler[Any] | None = None


def log_info(logger: logging.Logger, message: str, fields: Mapping[str, object]) -> None:
    """Log `message` at INFO with `fields` as extras: `logger.info(message, extra=fields)`.

    When the one place that record would go is the JSON handler of `configure_logging`, the
    line is rendered and written straight to its stream, the same line its formatter would
    write, without logging's record, caller lookup and handler chain: they were most of the
    access line's cost, itself a tenth of a cheap request's CPU (docs/benchmarks-method.md).
    Any other handler or filter on the way (a test's capture, a deployment's own set-up) gets
    the record through `logging` as before.
    """
    handler = _sole_json_handler(logger)
    if handler is None:
        if logger.isEnabledFor(logging.INFO):
            logger.info(message, extra=dict(fields))
        return
    line = render_line(
        created=time.time(),
        level="info",
        logger=logger.name,
        message=message,
        pid=os.getpid(),
        fields=fields,
    )
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
        handler.flush()
    except Exception:
        # What logging does with a line it cannot write (raiseExceptions: a note on stderr).
        handler.handleError(logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None))
    finally:
        handler.release()


def _sole_json_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The JSON handler, if an INFO record of `logger` would reach it and nothing else."""
    handler = _json_handler
    if handler is None or handler.filters or handler.level > logging.INFO:
        return None
    if logger.disabled or logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            # The first logger up the chain with handlers must be the root, with ours alone.
            if current is logging.root and current.handlers == [handler]:
                return handler
            return None
        if not current.propagate:
            return None
        current = current.parent
    return None


def configure_logging(level: str = "INFO") -> None:
    """Send every log record, uvicorn's included, to stderr as JSON lines."""
    global _json_handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    _json_handler = handler
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own handlers would print a second, plain copy; let records reach the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    watch_security_events()
