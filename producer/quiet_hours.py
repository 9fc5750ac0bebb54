"""Quiet hours: hold bulk messages while it is night (or any window) at the recipient's end.

The recipient's time zones come from the number (`phonenumbers.timezone`); a number whose
range spans several zones is quiet while it is quiet in any of them, so nobody is woken up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_timezones

from worker.errors import ValidationError


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily local-time window (may cross midnight, e.g. 21:00–08:00)."""

    start: time
    end: time

    @classmethod
    def parse(cls, start: str, end: str) -> QuietHours:
        try:
            window = cls(time.fromisoformat(start), time.fromisoformat(end))
        except ValueError:
            raise ValidationError(
                "quiet_hours needs HH:MM times", field="quiet_hours", code="invalid_time"
            ) from None
        if window.start == window.end:
            raise ValidationError(
                "quiet_hours start and end must differ", field="quiet_hours", code="invalid_time"
            )
        return window

    def is_quiet(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@lru_cache(maxsize=4096)
def zones_for(number: str) -> tuple[str, ...]:
    """The IANA zones of an E.164 number's range (empty when unknown)."""
    zones = number_timezones.time_zones_for_number(phonenumbers.parse(number))
    return tuple(z for z in zones if z != "Etc/Unknown")


def _release_in_zone(window: QuietHours, zone: str, moment: datetime) -> datetime:
    local = moment.astimezone(ZoneInfo(zone))
    if not window.is_quiet(local.time().replace(tzinfo=None)):
        return moment
    release = local.replace(hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0)
    if release <= local:
        release += timedelta(days=1)
    return release.astimezone(UTC)


@lru_cache(maxsize=65_536)
def _release(window: QuietHours, zones: tuple[str, ...], minute: int) -> int:
    moment = datetime.fromtimestamp(minute * 60, tz=UTC)
    for _ in range(len(zones) + 1):  # each pass can only move later; settles within the zones
        later = max((_release_in_zone(window, zone, moment) for zone in zones), default=moment)
        if later == moment:
            break
        moment = later
    return int(moment.timestamp() // 60)


def release_time(number: str, at_ms: int, window: QuietHours) -> int | None:
    """When the message may go (ms), if `at_ms` falls in quiet hours anywhere in its zones."""
    minute = at_ms // 60_000
    released = _release(window, zones_for(number), minute)
    return released * 60_000 if released > minute else None
