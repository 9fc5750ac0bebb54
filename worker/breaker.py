"""A circuit breaker per carrier, its state in Redis so that every worker shares it.

closed ──(N consecutive failures)──▶ open ──(cool-down over)──▶ half-open
  ▲                                   ▲                            │
  └────────── trial succeeds ─────────┼──────── trial fails ───────┘

Failures are what says the carrier is down: connect errors, 5xx, timeouts. A 4xx answer
(the carrier is up and refusing one request) counts as a success; a 429 counts as neither.
Half-open lets one trial request through at a time (a lease, so a worker that dies mid-trial
does not wedge the breaker); its outcome closes or re-opens the circuit. Times are Redis's
clock in integer microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import redis

from worker.store import lua_scripts

# Keep a breaker's failure count this long after its last failure.
KEEP_SECONDS = 24 * 3600


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Whether a request may go now; if not, how long until the breaker may let one through."""

    allowed: bool
    trial: bool = False  # this request is the half-open trial
    wait: float = 0.0


class CircuitBreaker:
    """One carrier's breaker: `allow()` before a request, `success()`/`failure()` after."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        trial_lease: float = 30.0,
    ) -> None:
        if failures < 1 or cooldown <= 0 or trial_lease <= 0:
            raise ValueError("failures must be >= 1; cooldown and trial_lease > 0")
        self.key = key
        self.failures = failures
        self.cooldown = cooldown
        self._cooldown_us = math.ceil(cooldown * 1_000_000)
        self._trial_us = math.ceil(trial_lease * 1_000_000)
        self._client = client
        self._allow = lua_scripts.register(client, "breaker_allow", with_prelude=False)
        self._failure = lua_scripts.register(client, "breaker_failure", with_prelude=False)

    def allow(self) -> Permit:
        """May a request go now? In half-open state only one (the trial) may."""
        verdict, wait_us = self._allow(keys=[self.key], args=[self._trial_us])
        verdict = int(verdict)
        return Permit(verdict > 0, verdict == 2, max(0, int(wait_us)) / 1_000_000)

    def success(self) -> None:
        """The carrier answered: close the circuit and forget the failures."""
        self._client.delete(self.key)

    def failure(self) -> bool:
        """The carrier looked down; True if this opened (or re-opened) the circuit."""
        args = [self.failures, self._cooldown_us, KEEP_SECONDS * 1000]
        return bool(int(self._failure(keys=[self.key], args=args)))

    def release_trial(self) -> None:
        """A trial permit that was not used (the request never left): let another try."""
        self._client.hdel(self.key, "trial_until")

    def state(self) -> BreakerState:
        """The state now, for `smsq carriers check` and metrics."""
        fields = self._client.hmget(self.key, ["open_until", "trial_until"])
        if not fields[0]:
            return BreakerState.CLOSED
        seconds, micros = self._client.time()
        now = int(seconds) * 1_000_000 + int(micros)
        return BreakerState.OPEN if now < int(fields[0]) else BreakerState.HALF_OPEN
