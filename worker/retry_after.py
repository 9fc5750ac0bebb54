"""The `Retry-After` header, read once for carriers and receipt endpoints alike."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Longest Retry-After believed by default: "come back tomorrow" still gets a cap.
MAX_RETRY_AFTER = 3600.0


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), within
    [0, cap]; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 7231 dates are GMT; a naive parse means the same
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)
