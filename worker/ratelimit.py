"""Carrier throughput limits shared by every worker: a GCRA rate limit and a concurrency cap.

Both live in Redis and are decided by one Lua script each, on Redis's own clock (`TIME`), so
every worker process on every host sees one limit. Times inside the scripts are integer
microseconds (exact in a Lua double).

GCRA (the generic cell rate algorithm, as in redis-cell): one key holds the theoretical
arrival time (TAT) of the next request. A request at `now` may go at
`max(TAT, now) + interval - burst * interval`; if that is at most `max_wait` ahead, the script
*reserves* the slot (moves the TAT on) and returns the wait, so the caller sleeps exactly that
long and the requests leave evenly spaced, without polling or a thundering herd. A longer wait
reserves nothing: the caller defers the work (through the durable scheduler) instead of holding
a worker slot.

`SourceLimiter` is the same GCRA kept in one process's memory, per source (a client address):
the API's guard of `/carriers/{name}/dlr`, which must cost no Redis round trip and leave no key
for a request it refuses.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis

from worker.store import lua_scripts


@dataclass(frozen=True, slots=True)
class Grant:
    """A limiter's answer: `granted` with a (short) `wait` to sleep first, or not and how long."""

    granted: bool
    wait: float  # seconds: to sleep before sending (granted) or until a slot frees (refused)


class RateLimiter:
    """At most `rate` requests per second with bursts of `burst`, across all processes."""

    def __init__(self, client: redis.Redis, key: str, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.key = key
        self.rate = rate
        self.burst = burst
        self._interval_us = max(1, round(1_000_000 / rate))
        self._script = lua_scripts.register(client, "rate_gcra", with_prelude=False)

    def acquire(self, max_wait: float) -> Grant:
        """Reserve the next slot if it is at most `max_wait` seconds away."""
        max_wait_us = max(0, math.floor(max_wait * 1_000_000))
        granted, wait_us = self._script(
            keys=[self.key], args=[self._interval_us, self.burst, max_wait_us]
        )
        return Grant(bool(int(granted)), max(0, int(wait_us)) / 1_000_000)


class ConcurrencyLimiter:
    """At most `limit` requests in flight at once, across all processes.

    Each holder has a lease (longer than any request takes), so a worker that dies while
    holding a slot gives it back when the lease runs out.
    """

    def __init__(self, client: redis.Redis, key: str, limit: int, lease: float = 60.0) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.key = key
        self.limit = limit
        self._lease_us = math.ceil(lease * 1_000_000)
        self._client = client
        self._script = lua_scripts.register(client, "slot_acquire", with_prelude=False)

    def acquire(self) -> str | None:
        """A token for a slot, or None when all are taken."""
        token = uuid.uuid4().hex
        taken = self._script(keys=[self.key], args=[self.limit, token, self._lease_us])
        return token if int(taken) else None

    def release(self, token: str) -> None:
        """Give a slot back."""
        self._client.zrem(self.key, token)

    def in_use(self) -> int:
        """Slots held now (leases not yet run out included)."""
        return int(self._client.zcard(self.key))


class SourceLimiter:
    """At most `rate` requests per second per source with bursts of `burst`, in this process.

    GCRA as above, one theoretical arrival time per source; the `max_sources` most recently
    seen are remembered (a source forgotten starts again with a full burst).
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        max_sources: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_sources >= 1")
        self._interval = 1.0 / rate
        self._tolerance = burst * self._interval
        self._max_sources = max_sources
        self._clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, source: str) -> float:
        """0.0 and the request counted when `source` may go now; else seconds until it may."""
        with self._lock:
            now = self._clock()
            tat = max(self._tats.get(source, now), now) + self._interval
            if tat - now > self._tolerance:
                return tat - now - self._tolerance
            self._tats[source] = tat
            self._tats.move_to_end(source)
            if len(self._tats) > self._max_sources:
                self._tats.popitem(last=False)
            return 0.0
