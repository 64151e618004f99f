"""The only place that reads the wall clock. Everything else is handed `now`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
# Seconds from an arbitrary start, never jumping: for caches and renewal deadlines.
Monotonic = Callable[[], float]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC, truncated to whole seconds.

    JWT times are whole seconds (RFC 7519 NumericDate); keeping rows at the same precision lets
    a stored `issued_at` re-create a token byte for byte.
    """
    return datetime.now(UTC).replace(microsecond=0)


def monotonic() -> float:
    """Seconds on a clock that never jumps: for caches and token renewal, not for claims."""
    return time.monotonic()
