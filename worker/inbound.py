"""Carrier receipts in: correlate each to its segment, update the message, queue client receipts."""

from __future__ import annotations

import base64
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import orjson
import redis

from worker.carriers.base import Carrier, CarrierReceipt, InboundRequest
from worker.clock import now_ms
from worker.contract import HANDLE_CARRIER_RECEIPT, POST_RECEIPT, Queue
from worker.errors import ValidationError
from worker.queueing import CeleryPublisher, Publisher
from worker.receipts.tokens import WRONG_SEGMENT, bound_ref, segment_ref
from worker.settings import Settings, get_settings
from worker.store import Store
from worker.store.keys import INBOX_KEY, INBOX_WATCH_KEY, PARKED_COUNTS_KEY
from worker.store.keys import UNKNOWN_RECEIPTS_KEY as UNKNOWN_RECEIPTS_KEY

if TYPE_CHECKING:
    from worker.receipts.routing import ReceiptRouter

log = logging.getLogger(__name__)

UNKNOWN_RECEIPTS_KEPT = 10_000
PARKING_FULL = "parking_full"


def accept_request(
    client: redis.Redis, publisher: CeleryPublisher, carrier_name: str, request: dict[str, Any]
) -> str:
    """Keep an inbound receipt request in the inbox and queue its task (one MULTI/EXEC when
    publishing is direct); `done` removes it once applied. Returns the inbox entry."""
    entry = uuid.uuid4().hex
    args = [carrier_name, request, entry]
    pipe = client.pipeline(transaction=True)
    pipe.hset(INBOX_KEY, entry, orjson.dumps([carrier_name, request]))
    pipe.zadd(INBOX_WATCH_KEY, {entry: now_ms()})
    queued = publisher.enqueue_in(pipe, HANDLE_CARRIER_RECEIPT, args, Queue.CARRIER_DLR)
    pipe.execute()
    if not queued:
        publisher.publish(HANDLE_CARRIER_RECEIPT, args, Queue.CARRIER_DLR)
    return entry


def done(client: redis.Redis, entry: str) -> None:
    """The inbox entry was applied: forget it."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(INBOX_KEY, entry)
    pipe.zrem(INBOX_WATCH_KEY, entry)
    pipe.execute()


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    """Counts of what one inbound request did."""

    applied: int = 0
    unchanged: int = 0  # duplicates and late receipts: no state went backwards
    unknown: int = 0  # carrier ids we do not know (recorded)
    invalid: bool = False


@dataclass(frozen=True, slots=True)
class Parking:
    """How long a receipt for a carrier id not (yet) stored waits for it, and how many such
    receipts may wait in all (counted over the last `seconds`, whether applied since or not)."""

    seconds: int = 600
    limit: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Parking:
        return cls(settings.carrier_receipts_park_seconds, settings.carrier_receipts_park_max)


@runtime_checkable
class BatchPublisher(Protocol):
    """A publisher that can publish several jobs in one round trip (`CeleryPublisher`)."""

    def publish_many(self, jobs: Sequence[tuple[str, Sequence[Any], str]]) -> None: ...


class ReceiptIntake:
    """Applies carrier receipts to the store.

    A request with many receipts (carriers that batch them) costs a fixed number of round
    trips, not some per receipt: one MGET finds every carrier id, one pipeline of the
    `apply_receipt` script applies the known ones (in order, as if one after another), one
    publishes the client receipts they opened; unknown ids add one round trip to count them
    against the parking cap, one pipeline to park them and one to record those still unknown.
    """

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        receipts: ReceiptRouter | None = None,
        parking: Parking | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        # Opened receipts go straight into their endpoint's queue (no `sms.dlr.post` task).
        self.receipts = receipts
        self.parking = parking or Parking.from_settings(get_settings())

    def handle(
        self, carrier: Carrier, request: InboundRequest, *, record_unknown: bool = True
    ) -> InboundOutcome:
        """Apply every receipt of one inbound request.

        With `record_unknown` False, unknown carrier ids are only counted: the caller will try
        again shortly, since a fast receipt can overtake the storing of its carrier id. A
        request that came with a segment's token changes that segment only.
        """
        try:
            receipts = carrier.parse_receipts(request)
        except ValidationError as exc:
            self._record_unknown(carrier.name, [("invalid", exc.message)])
            return InboundOutcome(invalid=True)
        results = self.apply_all(
            carrier.name, receipts, record_unknown=record_unknown, ref=bound_ref(request)
        )
        applied = sum(1 for result in results if result)
        unknown = sum(1 for result in results if result is None)
        return InboundOutcome(applied, len(results) - applied - unknown, unknown)

    def record_invalid(self, carrier_name: str, detail: str) -> None:
        """Record a request whose receipts could not be read."""
        self._record_unknown(carrier_name, [("invalid", detail)])

    def apply(
        self, carrier_name: str, receipt: CarrierReceipt, *, record_unknown: bool = True
    ) -> bool | None:
        """Apply one receipt: True if it changed a segment, False if not, None if unknown."""
        return self.apply_all(carrier_name, [receipt], record_unknown=record_unknown)[0]

    def apply_all(
        self,
        carrier_name: str,
        receipts: Sequence[CarrierReceipt],
        *,
        record_unknown: bool = True,
        ref: str | None = None,
        refs: Sequence[str | None] | None = None,
    ) -> list[bool | None]:
        """Apply receipts in order; for each, True if it changed a segment, False if not, None
        if its carrier id is unknown. `refs`: each receipt's own `ref` (receipts of several
        requests applied together).

        With `record_unknown`, a receipt for an id we do not know is also parked (for
        `Parking.seconds`, while fewer than `Parking.limit` are): the id may still be stored
        (a receipt can overtake the storing of its id; a run that died after the carrier took
        the segment is resent with the same client reference, and the carrier answers with the
        same id); it is applied then. With `ref` (the segment a token vouched for), a receipt
        whose carrier id belongs to another segment is refused (False), now or when parked.
        """
        if not receipts:
            return []
        bound = list(refs) if refs is not None else [ref] * len(receipts)
        fields = [parked(r, carrier_name, bound[i]) for i, r in enumerate(receipts)]
        ids = [receipt.carrier_id for receipt in receipts]
        found = self.store.segments_for_carrier_ids(carrier_name, ids)
        missing = [i for i, segment in enumerate(found) if segment is None]
        if missing and record_unknown:
            room = self._parking_room(carrier_name, len(missing))
            again = self.store.park_receipts(
                carrier_name,
                [(ids[i], fields[i]) for i in missing[:room]],
                ttl=self.parking.seconds,
            )
            for i, segment in zip(missing, again, strict=False):
                found[i] = segment
            self._record_unknown(
                carrier_name,
                [(ids[i], str(receipts[i].status)) for i in missing if found[i] is None],
            )
        known = [(i, segment) for i, segment in enumerate(found) if segment is not None]
        foreign = [
            i for i, (m, seq) in known if bound[i] is not None and segment_ref(m, seq) != bound[i]
        ]
        if foreign:
            _refuse(carrier_name, WRONG_SEGMENT, len(foreign))
            refused = set(foreign)
            known = [(i, segment) for i, segment in known if i not in refused]
        changed = self.apply_many([(m, seq, fields[i]) for i, (m, seq) in known])
        results: list[bool | None] = [None] * len(receipts)
        for i in foreign:
            results[i] = False
        for (i, _), result in zip(known, changed, strict=True):
            results[i] = result
        return results

    def apply_to(self, message_id: str, seq: int, receipt: Mapping[str, str | None]) -> bool:
        """Apply a receipt (`parked` fields) to a known segment; True if it changed it. One
        parked under a token for another segment is refused (False)."""
        ref = receipt.get("ref")
        if ref is not None and ref != segment_ref(message_id, seq):
            _refuse(receipt.get("carrier") or "-", WRONG_SEGMENT, 1)
            return False
        return self.apply_many([(message_id, seq, receipt)])[0]

    def apply_many(
        self, receipts: Sequence[tuple[str, int, Mapping[str, str | None]]]
    ) -> list[bool]:
        """Apply receipts (`parked` fields) to known segments, in order; True for each that
        changed its segment."""
        if not receipts:
            return []
        results = self.store.apply_receipts(
            [
                (message_id, seq, receipt["status"] or "", receipt.get("error_code"),
                 receipt.get("error_message"))
                for message_id, seq, receipt in receipts
            ]
        )  # fmt: skip
        # The store opened the level-2 receipt in the same atomic step that made the message
        # final, so a crash here loses nothing: the reconciler republishes an open receipt.
        opened = [
            (message_id, level)
            for (message_id, _, _), result in zip(receipts, results, strict=True)
            for level in result.receipt_levels
        ]
        if self.receipts is not None:
            self.receipts.route(opened)
        else:
            self._publish([(POST_RECEIPT, [m, level], Queue.DLR) for m, level in opened])
        return [result.segment_changed for result in results]

    def _publish(self, jobs: Sequence[tuple[str, Sequence[Any], str]]) -> None:
        if len(jobs) > 1 and isinstance(self.publisher, BatchPublisher):
            self.publisher.publish_many(jobs)
            return
        for task, args, queue in jobs:
            self.publisher.publish(task, args, queue)

    def _parking_room(self, carrier_name: str, wanted: int) -> int:
        """How many of `wanted` receipts may be parked now: all, unless that would take the
        receipts parked within the last `Parking.seconds` past `Parking.limit` (then the rest
        are refused and counted). Per-minute counts in one hash, so one key holds the tally."""
        minute = now_ms() // 60_000
        oldest = minute - math.ceil(self.parking.seconds / 60)  # a parked receipt lives so long
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.hincrby(PARKED_COUNTS_KEY, str(minute), wanted)
        pipe.expire(PARKED_COUNTS_KEY, self.parking.seconds + 60)
        pipe.hgetall(PARKED_COUNTS_KEY)
        counts = cast(dict[str, str], pipe.execute()[2])
        stale = [m for m in counts if int(m) < oldest]
        total = sum(int(n) for m, n in counts.items() if int(m) >= oldest)
        room = max(0, wanted - max(0, total - self.parking.limit))
        if stale or room < wanted:
            pipe = self.store.redis.pipeline(transaction=False)
            if stale:
                pipe.hdel(PARKED_COUNTS_KEY, *stale)
            if room < wanted:
                pipe.hincrby(PARKED_COUNTS_KEY, str(minute), room - wanted)
            pipe.execute()
        if room < wanted:
            _refuse(carrier_name, PARKING_FULL, wanted - room)
        return room

    def _record_unknown(self, carrier_name: str, entries: Sequence[tuple[str, str]]) -> None:
        """Record (carrier id, detail) pairs we could not apply, newest first, in one pipeline."""
        if not entries:
            return
        at = now_ms()
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.lpush(
            UNKNOWN_RECEIPTS_KEY,
            *[f"{at} {carrier_name} {carrier_id} {detail}" for carrier_id, detail in entries],
        )
        pipe.ltrim(UNKNOWN_RECEIPTS_KEY, 0, UNKNOWN_RECEIPTS_KEPT - 1)
        pipe.execute()
        log.info(
            "carrier receipt for an unknown id recorded",
            extra={"carrier": carrier_name, "receipts": len(entries)},
        )


def inbound_request(data: dict[str, Any]) -> InboundRequest:
    """Rebuild an inbound request as the API kept it (its body travels base64-encoded)."""
    return InboundRequest(
        method=data["method"],
        url=data["url"],
        query=data.get("query", {}),
        headers=data.get("headers", {}),
        body=base64.b64decode(data.get("body", "")),
        form=data.get("form", {}),
    )


def parked(
    receipt: CarrierReceipt, carrier_name: str = "", ref: str | None = None
) -> dict[str, str | None]:
    """The fields of a receipt that outlive its request (kept while its carrier id is unknown),
    with the segment its request's token vouched for, if any."""
    fields = {
        "status": str(receipt.status),
        "error_code": receipt.error_code,
        "error_message": receipt.error_message,
    }
    if ref is not None:
        fields.update(ref=ref, carrier=carrier_name)
    return fields


def _refuse(carrier_name: str, reason: str, count: int) -> None:
    """Count receipts refused at intake (`smsq_carrier_receipts_refused_total`)."""
    from worker import metrics  # here: metrics imports the scheduler, which imports this

    metrics.CARRIER_RECEIPTS_REFUSED.labels(carrier_name, reason).inc(count)
    log.warning(
        "carrier receipts refused",
        extra={"carrier": carrier_name, "reason": reason, "receipts": count},
    )
