"""The audit log's filters at GET /admin/audit: `actor`, `action`, `after`, `before`, read
strictly (docs/admin.md has the grammar). A bad value is 422 `invalid_input`, never an
empty page that looks like an answer.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.datastructures import QueryParams

from tokenrota_server.db.audit import AuditAction, AuditFilter
from tokenrota_server.errors import InvalidInput

MAX_ACTOR_LENGTH = 200
# Longest RFC 3339 time with microseconds and an offset, with room to spare.
MAX_TIME_LENGTH = 40


def parse(params: QueryParams) -> AuditFilter:
    """The filters among `params`; raise `InvalidInput` for a bad or repeated one."""
    for name in ("actor", "action", "after", "before"):
        if len(params.getlist(name)) > 1:
            raise InvalidInput(f"'{name}' may be given once.")
    return AuditFilter(
        actor=_actor(params.get("actor")),
        action=_action(params.get("action")),
        at_or_after=_time("after", params.get("after")),
        at_before=_time("before", params.get("before")),
    )


def _actor(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_ACTOR_LENGTH or not raw.isprintable():
        raise InvalidInput(
            f"'actor' is 1 to {MAX_ACTOR_LENGTH} printable characters, as events name it:"
            " client:<client_id>, user:<id>, cli or system."
        )
    return raw


def _action(raw: str | None) -> AuditAction | None:
    if raw is None:
        return None
    try:
        return AuditAction(raw)
    except ValueError:
        raise InvalidInput(
            "'action' is one of: " + ", ".join(sorted(action.value for action in AuditAction))
        ) from None


def _time(name: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        if len(raw) > MAX_TIME_LENGTH or not raw.isascii():
            raise ValueError("too long")
        at = datetime.fromisoformat(raw)
        if at.tzinfo is None:
            raise ValueError("no offset")
        # 0001-01-01T00:00:00+14:00 is in no year datetime holds once in UTC.
        return at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"'{name}' is a date-time with an offset (RFC 3339), e.g. 2026-12-07T04:00:00Z."
        ) from None
