"""`RoutedCarrier`: routes, shared limits, circuit breakers and failover behind `Carrier`.

For each segment: the route's carriers in order (`worker.carriers.routes`); for each, its
breaker (`worker.breaker`), a concurrency slot and a rate-limit slot (`worker.ratelimit`),
waited for in place only briefly; then the adapter. The outcome of each try decides:

- accepted: done; `Accepted.carrier` names the carrier;
- unavailable (connect error, 5xx, timeout before sending): the breaker counts a failure and
  the next carrier is tried;
- 429, an open breaker, a limit further off than `max_wait`: skipped, not counted against it;
- rejected for a carrier-side reason (authentication, account, sender, no route there): the
  next carrier is tried; rejected for the message's own sake (bad number): raised;
- unknown outcome (no answer after sending): raised; if the Sender resends it (carriers that
  honour client references), it goes to that same carrier only, never elsewhere.

When no carrier took it, `CarrierUnavailableError` carries the shortest wait as `retry_after`,
so the Sender retries through the durable scheduler. Per segment (`client_ref`) Redis
remembers which carriers failed or refused it: a later retry goes to the untried ones, a
carrier that refused it is never asked again, and one that was down is asked again only after
every other carrier of the route was down too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import redis

from worker.breaker import CircuitBreaker, Permit
from worker.carriers.base import (
    Accepted,
    Carrier,
    CarrierReceipt,
    InboundRequest,
)
from worker.carriers.base import SegmentSubmission as Segment
from worker.carriers.responses import CARRIER_SIDE_STATUSES
from worker.carriers.routes import RouteTable
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
)
from worker.ratelimit import ConcurrencyLimiter, RateLimiter
from worker.receipts.tokens import for_carrier
from worker.store.keys import carrier_tries_key

log = logging.getLogger(__name__)

HISTORY_SECONDS = 2 * 24 * 3600  # longer than any message keeps retrying
SLOT_POLL_SECONDS = 0.02
UNAVAILABLE, REJECTED, UNKNOWN = "unavailable", "rejected", "unknown"


def is_carrier_side(exc: CarrierRejectedError) -> bool:
    """Does the refusal blame the carrier account (auth, credit, sender, routing), not the SMS?
    The adapter says so (the shared HTTP rule, `worker.carriers.responses`); a refusal it did
    not classify is judged by its HTTP status alone."""
    if exc.carrier_side is not None:
        return exc.carrier_side
    return exc.status_code in CARRIER_SIDE_STATUSES


@dataclass
class Gate:
    """One carrier with its shared breaker and limits (each optional)."""

    carrier: Carrier
    breaker: CircuitBreaker | None = None
    rate: RateLimiter | None = None
    slots: ConcurrencyLimiter | None = None


@dataclass
class _Tally:
    """What the tries of one `submit` ran into."""

    waits: list[tuple[float, str]] = field(default_factory=list)
    pinned: bool = False  # only the carrier with the unknown outcome was a candidate
    unavailable: CarrierUnavailableError | None = None
    rejected: CarrierRejectedError | None = None

    def error(self, name: str) -> CarrierError:
        """The error for the Sender once no carrier took the segment."""
        if not self.waits:
            if self.unavailable is not None:
                return self.unavailable
            if self.rejected is not None:
                return self.rejected  # every carrier refused it for good
        wait, code = min(self.waits, default=(None, "unavailable"))
        return CarrierUnavailableError(
            f"no carrier can take the segment now ({code})",
            carrier=name,
            code=code,
            retry_after=wait,
        )


class RoutedCarrier:
    """A `Carrier` that spreads segments over several carriers (or guards just one)."""

    def __init__(
        self,
        gates: dict[str, Gate],
        table: RouteTable,
        client: redis.Redis,
        *,
        public_url: str,
        max_wait: float = 0.5,
        name: str = "routes",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.gates = gates
        self.table = table
        # Whole text only if every carrier segments itself; otherwise segments are submitted
        # one by one and whole-text carriers take single-segment messages only.
        self.submits_whole_text = all(g.carrier.submits_whole_text for g in gates.values())
        # A segment whose outcome is unknown is resent only to the same carrier (see
        # `_candidates`), so the route honours client references when all its carriers do.
        self.honours_client_ref = all(g.carrier.honours_client_ref for g in gates.values())
        # Some of its carriers' acceptances may wait for the SMSC's answer (`Accepted` says so).
        self.acknowledges_by_receipt = any(
            g.carrier.acknowledges_by_receipt for g in gates.values()
        )
        self._redis = client
        self._public_url = public_url.rstrip("/")
        self._max_wait = max_wait
        self._sleep = sleep

    def submit(self, segment: Segment) -> Accepted:
        """Submit to the first carrier of the route that takes it (see the module doc)."""
        order = self.table.order(segment.to, segment.message_id)
        if segment.total > 1:  # whole-text carriers cannot take one part of a message
            order = [n for n in order if not self.gates[n].carrier.submits_whole_text]
        if not order:
            raise CarrierRejectedError(
                "no carrier route for this destination", carrier=self.name, code="no_route"
            )
        tally = _Tally()
        candidates, tally.pinned = self._candidates(segment.client_ref, order)
        for name in candidates:
            accepted = self._try(name, segment, tally, remember=len(order) > 1)
            if accepted is not None:
                return accepted
        raise tally.error(self.name)

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """The guarded carrier's parsing when this guards one carrier under its own name.

        Several carriers' receipts come in per carrier (`/carriers/{name}/dlr`) and are parsed
        by that carrier's adapter (`registry.carrier_for_name`), never here.
        """
        gate = self.gates.get(self.name)
        if gate is None:
            raise NotImplementedError("receipts arrive per carrier; use carrier_for_name()")
        return gate.carrier.parse_receipts(request)

    def _candidates(self, client_ref: str, order: list[str]) -> tuple[list[str], bool]:
        """The carriers not yet tried; once all were down, those that were (not refusals).

        Or only the one whose outcome was unknown (then True: it is pinned to it).
        """
        if len(order) == 1:
            return order, False
        raw: dict[str | bytes, str | bytes] = self._redis.hgetall(carrier_tries_key(client_ref))
        tried = {_text(k): _text(v) for k, v in raw.items()}
        pinned = [name for name in order if tried.get(name) == UNKNOWN]
        if pinned:  # it may be there already: only that carrier may see it again
            return pinned[:1], True
        fresh = [name for name in order if name not in tried]
        if fresh:
            return fresh, False
        again = [name for name in order if tried.get(name) == UNAVAILABLE]
        if again:
            self._redis.hdel(carrier_tries_key(client_ref), *again)
            return again, False
        raise CarrierRejectedError(
            "every carrier of the route refused this segment",
            carrier=self.name,
            code="rejected_everywhere",
        )

    def _try(
        self, name: str, segment: Segment, tally: _Tally, *, remember: bool
    ) -> Accepted | None:
        gate = self.gates[name]
        permit = gate.breaker.allow() if gate.breaker else Permit(True)
        if not permit.allowed:
            tally.waits.append((permit.wait, "circuit_open"))
            return None
        settled = False  # did the breaker hear an outcome?
        token = None
        try:
            token = self._take_slot(gate, tally) if gate.slots else None
            if (gate.slots and token is None) or not self._take_rate(gate, tally):
                return None
            url = for_carrier(segment.receipt_url, self._public_url, name)  # token kept
            submission = replace(segment, receipt_url=url)
            try:
                accepted = gate.carrier.submit(submission)
            except CarrierError as exc:
                settled = self._failed(name, gate, segment, exc, tally, remember=remember)
                return None
            settled = True
            if gate.breaker:
                gate.breaker.success()
            return replace(accepted, carrier=accepted.carrier or name)
        finally:
            if token is not None and gate.slots:
                gate.slots.release(token)
            if permit.trial and not settled and gate.breaker:
                gate.breaker.release_trial()

    def _failed(
        self,
        name: str,
        gate: Gate,
        segment: Segment,
        exc: CarrierError,
        tally: _Tally,
        *,
        remember: bool,
    ) -> bool:
        """Record a failed try; re-raise what must not fail over. True if the breaker heard."""
        extra = {"message_id": segment.message_id, "seq": segment.seq, "carrier": name}
        if isinstance(exc, CarrierUnavailableError) and exc.status_code == 429:
            tally.waits.append((exc.retry_after or 1.0, exc.code or "throttled"))
            return False  # busy, not down
        if isinstance(exc, CarrierRejectedError):
            if gate.breaker:
                gate.breaker.success()  # it answered: it is up
            if not is_carrier_side(exc):
                raise exc
            log.info("carrier refused the segment for its own reasons", extra=extra)
            tally.rejected = exc
            self._remember(segment, name, REJECTED, remember and not tally.pinned)
            return True
        if gate.breaker and gate.breaker.failure():
            log.warning("circuit opened", extra=extra)
        if isinstance(exc, CarrierUnknownOutcomeError):
            self._remember(segment, name, UNKNOWN, remember)
            raise exc  # it may have been sent: never resend it elsewhere
        assert isinstance(exc, CarrierUnavailableError)
        tally.unavailable = exc
        self._remember(segment, name, UNAVAILABLE, remember and not tally.pinned)
        return True

    def _remember(self, segment: Segment, name: str, outcome: str, remember: bool) -> None:
        if remember:
            key = carrier_tries_key(segment.client_ref)
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(key, name, outcome)
            pipe.expire(key, HISTORY_SECONDS)
            pipe.execute()

    def _take_slot(self, gate: Gate, tally: _Tally) -> str | None:
        """A concurrency slot, polled for up to `max_wait`; None (and a wait noted) if not."""
        assert gate.slots is not None
        deadline = time.monotonic() + self._max_wait
        while (token := gate.slots.acquire()) is None:
            if time.monotonic() >= deadline:
                tally.waits.append((max(self._max_wait, SLOT_POLL_SECONDS), "concurrency_limited"))
                return None
            self._sleep(SLOT_POLL_SECONDS)
        return token

    def _take_rate(self, gate: Gate, tally: _Tally) -> bool:
        """Reserve a rate slot and sleep until it; False (and the wait noted) if too far off."""
        if gate.rate is None:
            return True
        grant = gate.rate.acquire(self._max_wait)
        if not grant.granted:
            tally.waits.append((grant.wait, "rate_limited"))
            return False
        if grant.wait > 0:
            self._sleep(grant.wait)
        return True


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
