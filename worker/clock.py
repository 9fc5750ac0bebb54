"""Wall-clock time as integer UTC milliseconds, and its ISO 8601 rendering."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def iso_ms(ms: int | None) -> str | None:
    """`2026-11-25T21:00:00.123Z` for a millisecond timestamp; None stays None."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
