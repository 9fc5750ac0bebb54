"""Quiet hours: bulk messages wait until the window ends at the recipient's end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from producer.quiet_hours import QuietHours, release_time
from worker.errors import ValidationError

NIGHT = QuietHours.parse("21:00", "08:00")
SAN_FRANCISCO = "+14155552671"  # America/Los_Angeles
BERLIN = "+4915112345678"  # Europe/Berlin


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class TestQuietHours:
    @pytest.mark.parametrize(
        ("at", "number", "release"),
        [
            ("2026-07-01T12:00:00+00:00", BERLIN, None),  # 14:00 in Berlin: send now
            ("2026-07-01T20:30:00+00:00", BERLIN, "2026-07-02T06:00:00+00:00"),  # 22:30 → 08:00
            ("2026-07-01T02:00:00+00:00", BERLIN, "2026-07-01T06:00:00+00:00"),  # 04:00 → 08:00
            ("2026-07-01T20:30:00+00:00", SAN_FRANCISCO, None),  # 13:30 in SF
            ("2026-01-15T06:00:00+00:00", SAN_FRANCISCO, "2026-01-15T16:00:00+00:00"),  # PST
        ],
    )
    def test_release_is_the_end_of_the_local_window(
        self, at: str, number: str, release: str | None
    ) -> None:
        """Inside the local window the message waits for its end; outside it goes now."""
        expected = ms(release) if release else None
        assert release_time(number, ms(at), NIGHT) == expected

    def test_daytime_window_that_does_not_cross_midnight(self) -> None:
        """A 12:00–14:00 window holds a Berlin message sent at 12:30 until 14:00."""
        lunch = QuietHours.parse("12:00", "14:00")
        at = datetime(2026, 7, 1, 10, 30, tzinfo=UTC)  # 12:30 Berlin summer time
        assert release_time(BERLIN, int(at.timestamp() * 1000), lunch) == ms(
            "2026-07-01T12:00:00+00:00"
        )

    @pytest.mark.parametrize(("start", "end"), [("25:00", "08:00"), ("08:00", "08:00")])
    def test_bad_windows_are_refused(self, start: str, end: str) -> None:
        """Impossible or empty windows are a validation error naming quiet_hours."""
        with pytest.raises(ValidationError) as caught:
            QuietHours.parse(start, end)
        assert caught.value.field == "quiet_hours"
