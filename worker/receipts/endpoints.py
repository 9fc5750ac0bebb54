"""Endpoints: where receipts go, as one unit of fairness and health.

An endpoint is one API key's receipt origin (`scheme://host:port` of its `dlr-url`): receipts
to it wait in its own queue, at most `EngineConfig.endpoint_concurrency` of them are in flight
at once, and it is backed off as a whole when it keeps failing (`HealthPolicy`), so a slow or
dead endpoint delays its own receipts only. Two keys calling the same host are two endpoints
(each signs with its own secret and is isolated from the other).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import urlsplit

from worker.store.receipts import EndpointHealth

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str  # 20 hex characters, stable
    origin: str  # scheme://host:port


@lru_cache(maxsize=4096)
def endpoint_for(key_id: str, dlr_url: str) -> Endpoint:
    """The endpoint of a key's receipt URL (an unparseable URL is an endpoint of its own:
    its receipts fail there and dead-letter, without touching anyone else's)."""
    try:
        parts = urlsplit(dlr_url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
        origin = f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
    except ValueError:
        origin = "invalid:" + dlr_url[:64]
    digest = hashlib.sha256(f"{key_id}\n{origin}".encode()).hexdigest()[:20]
    return Endpoint(digest, origin)


@dataclass(frozen=True, slots=True)
class Round:
    """The attempts of one drain round, in the order they ended: True for a success."""

    outcomes: tuple[bool, ...]
    reason: str = ""  # the last failure's description
    retry_after: float | None = None  # the longest `Retry-After` an answer asked for


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When an endpoint is backed off, and for how long.

    `threshold` failures in a row (any non-2xx, timeout or network error) back the endpoint
    off for `first_backoff` seconds, doubling with each further backoff up to `max_backoff`;
    a `Retry-After` (429, 503) backs it off at once for that long (within the same bounds).
    Any success clears it. While it backs off its receipts wait in its queue, durably; each
    receipt's own retry schedule and 24 h limit still apply.
    """

    threshold: int = 5
    first_backoff: float = 5.0
    max_backoff: float = 600.0

    def after(self, health: EndpointHealth, round_: Round, now: int) -> EndpointHealth | None:
        """The endpoint's health after some attempts (in the order they ended); None when it
        is healthy. Failures of attempts that were in flight when a backoff began count, but
        do not back it off again."""
        failures = health.failures
        succeeded = False
        for ok in round_.outcomes:
            failures = 0 if ok else failures + 1
            succeeded = succeeded or ok
        if failures == 0:
            return None
        since = health.since if health.failures and not succeeded else now
        updated = replace(health, failures=failures, reason=round_.reason, since=since)
        if succeeded:
            updated = replace(updated, backoff_until=0, backoffs=0)
        elif health.backoff_until > now:
            return updated  # backing off already
        if round_.retry_after:
            wait = min(max(round_.retry_after, 1.0), self.max_backoff)
            return replace(updated, backoff_until=now + int(wait * 1000))
        if failures < self.threshold:
            return updated
        backoffs = updated.backoffs + 1
        wait = min(self.first_backoff * 2 ** (backoffs - 1), self.max_backoff)
        return replace(updated, backoff_until=now + int(wait * 1000), backoffs=backoffs)
