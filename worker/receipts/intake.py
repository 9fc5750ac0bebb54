"""Carrier receipts in: the API keeps each request in the inbox, a drain applies them in
batches.

The API (`accept`) puts a carrier's request in the inbox (`worker.store.inbox`) and, unless a
drain is planned or running, starts one (`sms.carrier_dlr.drain` on the `carrier-dlr` lane):
one round trip per request, no task per request. A drain leases up to `DRAIN_BATCH` requests
at a time, parses them, applies all their receipts together (`ReceiptIntake.apply_all`, a
fixed number of round trips per carrier for the whole batch), routes the client receipts they
open, and forgets the requests; it looks again until nothing is due, lingering briefly so a
steady stream needs no new drain. A request leased by a drain that died is due again when its
lease ends, and the reconciler starts a drain for requests overdue; applying a receipt twice
changes nothing. Only one drain runs at a time (its hold on the ring flag).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worker import metrics
from worker.carriers.base import Carrier, CarrierReceipt, InboundRequest
from worker.clock import now_ms
from worker.contract import DRAIN_CARRIER_RECEIPTS, Queue
from worker.errors import NotFoundError, ValidationError
from worker.inbound import ReceiptIntake, inbound_request
from worker.queueing import CeleryPublisher, Publisher
from worker.receipts.tokens import bound_ref
from worker.store.inbox import Inbox

log = logging.getLogger(__name__)

DRAIN_BATCH = 200  # requests per lease
LEASE_MS = 60_000  # a leased request is due again after this (its drain died)
HOLD_MS = 15_000  # the drain's hold on the ring flag, renewed with every lease
LINGER_ROUNDS = 2  # empty leases in a row before a drain ends ...
LINGER_SECONDS = 0.02  # ... this far apart


def accept(inbox: Inbox, publisher: CeleryPublisher, carrier: str, request: dict[str, Any]) -> str:
    """Keep a carrier's request until a drain applies it; start a drain unless one runs.
    Returns the inbox entry."""
    entry = uuid.uuid4().hex
    if inbox.put(entry, carrier, request, now_ms()):
        publisher.publish(DRAIN_CARRIER_RECEIPTS, [], Queue.CARRIER_DLR)
    return entry


def nudge(inbox: Inbox, publisher: Publisher, now: int, stale_before: int) -> bool:
    """Start a drain for requests left overdue (the reconciler), unless one runs, or was
    planned since `stale_before`; True if it started one."""
    if inbox.ring(now, stale_before):
        publisher.publish(DRAIN_CARRIER_RECEIPTS, [], Queue.CARRIER_DLR)
        return True
    return False


@dataclass(slots=True)
class Tally:
    """What a drain did, for its task's result and the metrics."""

    requests: int = 0
    applied: int = 0
    unchanged: int = 0
    unknown: int = 0
    invalid: int = 0

    def __str__(self) -> str:
        return (
            f"requests={self.requests} applied={self.applied} unchanged={self.unchanged} "
            f"unknown={self.unknown} invalid={self.invalid}"
        )


class IntakeDrain:
    """Drains the inbox (`drain`); one per worker process, its drains one at a time."""

    def __init__(
        self,
        inbox: Inbox,
        intake: ReceiptIntake,
        carrier_for: Callable[[str], Carrier],
        publisher: Publisher,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.inbox = inbox
        self.intake = intake
        self.carrier_for = carrier_for
        self.publisher = publisher
        self.clock = clock

    def drain(self) -> Tally:
        """Apply what is due until nothing is; returns what was done."""
        token = uuid.uuid4().hex
        tally = Tally()
        idle = 0
        while True:
            lease = self.inbox.lease(
                token, self.clock(), DRAIN_BATCH, LEASE_MS, HOLD_MS, keep=idle < LINGER_ROUNDS
            )
            if lease.state == "items":
                idle = 0
                self._apply(lease.entries, tally)
                self.inbox.done([entry for entry, _ in lease.entries])
            elif lease.state == "idle":
                idle += 1
                time.sleep(LINGER_SECONDS)
            else:
                if lease.state == "later":
                    delay = max(0.0, (lease.at - self.clock()) / 1000)
                    self.publisher.publish_later(
                        DRAIN_CARRIER_RECEIPTS, [], Queue.CARRIER_DLR, delay
                    )
                return tally

    def _apply(
        self, entries: Sequence[tuple[str, tuple[str, dict[str, Any]] | None]], tally: Tally
    ) -> None:
        """Parse every request, then apply their receipts carrier by carrier, in the order they
        came (a segment's receipts keep their order)."""
        batches: dict[str, list[tuple[CarrierReceipt, str | None]]] = {}
        for _entry, found in entries:
            if found is None:
                continue  # applied and forgotten by an earlier drain
            name, raw = found
            tally.requests += 1
            parsed = self._parse(name, inbound_request(raw))
            if parsed is None:
                tally.invalid += 1
                continue
            batches.setdefault(name, []).extend(parsed)
        for name, items in batches.items():
            results = self.intake.apply_all(
                name, [receipt for receipt, _ in items], refs=[ref for _, ref in items]
            )
            counts = Counter(_outcome(result) for result in results)
            for outcome, count in counts.items():
                metrics.CARRIER_RECEIPTS_APPLIED.labels(name, outcome).inc(count)
            tally.applied += counts["applied"]
            tally.unchanged += counts["unchanged"]
            tally.unknown += counts["unknown"]

    def _parse(
        self, name: str, request: InboundRequest
    ) -> list[tuple[CarrierReceipt, str | None]] | None:
        try:
            carrier = self.carrier_for(name)
            receipts = carrier.parse_receipts(request)
        except (ValidationError, NotFoundError) as exc:
            self.intake.record_invalid(name, str(exc))
            return None
        ref = bound_ref(request)
        return [(receipt, ref) for receipt in receipts]


def _outcome(result: bool | None) -> str:
    if result is None:
        return "unknown"
    return "applied" if result else "unchanged"
