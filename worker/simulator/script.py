"""The simulator's scripted behaviour: latency, outages, a throughput limit, receipt plans.

Kept apart from the request handlers so that each rule is a small pure-ish function of the
config, one RNG and a clock. Times are `time.monotonic()` seconds.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.simulator.config import SimulatorConfig

# z for the 99th percentile of a normal distribution (lognormal latency: median and p99).
Z99 = 2.326


@dataclass(frozen=True, slots=True)
class PlannedReceipt:
    """One receipt POST to make: after `delay` seconds, saying `status`."""

    delay: float
    status: str


class Script:
    """Decides latency, outages, throttling and receipts for one simulator."""

    def __init__(
        self,
        config: SimulatorConfig,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._rng = rng
        self._clock = clock
        self.restart()

    def restart(self) -> None:
        """Start the outage windows over from now, end a manual outage, free the throughput."""
        self.started = self._clock()
        self.down_until: float | None = None
        self._next_free = 0.0

    def latency(self) -> float:
        """Seconds to wait before answering a submission."""
        base, spread = self.config.latency_ms, self.config.jitter_ms
        dist = self.config.latency_dist
        if dist == "exponential" and spread:
            extra = self._rng.expovariate(1.0 / spread)
        elif dist == "lognormal" and base > 0:
            # median `latency_ms`, 99th percentile `latency_ms + jitter_ms`
            sigma = math.log((base + spread) / base) / Z99 if spread else 0.0
            return self._rng.lognormvariate(math.log(base), sigma) / 1000.0
        else:
            extra = self._rng.uniform(0.0, spread) if spread else 0.0
        return (base + extra) / 1000.0

    def set_outage(self, seconds: float | None) -> None:
        """Go down for `seconds` (None: until told otherwise); 0 ends a manual outage."""
        if seconds is None:
            self.down_until = math.inf
        else:
            self.down_until = self._clock() + seconds if seconds > 0 else None

    def is_down(self) -> bool:
        """In a manual outage, or inside one of the configured windows."""
        now = self._clock()
        if self.down_until is not None and now < self.down_until:
            return True
        since = now - self.started
        return any(start <= since < end for start, end in self.config.outages)

    def throttle(self) -> float | None:
        """None if a submission fits `max_rate` now (and counts it); else seconds to wait."""
        if not self.config.max_rate:
            return None
        interval = 1.0 / self.config.max_rate
        now = self._clock()
        if now < self._next_free - interval:  # allows one interval of burst
            return self._next_free - interval - now
        self._next_free = max(self._next_free, now) + interval
        return None

    def receipts(self, status: str, *, last_part: bool) -> list[PlannedReceipt]:
        """The receipts for one accepted segment whose final state is `status`."""
        config = self.config
        if config.receipts_for == "last" and not last_part:
            return []  # like an SMSC that reports on the last part of a message only
        roll = self._rng.random
        if roll() < config.fake_fast_receipts:
            return [PlannedReceipt(0.0, "DELIVRD")]  # "delivered" before it could be
        delay = config.receipt_delay + (
            self._rng.uniform(0.0, config.receipt_jitter) if config.receipt_jitter else 0.0
        )
        plan = [PlannedReceipt(delay, status)]
        if roll() < config.duplicate_receipts:
            plan.append(PlannedReceipt(delay + 0.05, status))
        if roll() < config.out_of_order_receipts:
            plan.append(PlannedReceipt(delay + 0.1, "ENROUTE"))  # an intermediate, too late
        return plan
