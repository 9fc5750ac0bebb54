"""Carrier receipts in: correlate each to its segment, update the message, queue client receipts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from worker.carriers.base import Carrier, CarrierReceipt, InboundRequest
from worker.clock import now_ms
from worker.contract import HANDLE_CARRIER_RECEIPT, POST_RECEIPT, Queue
from worker.errors import ValidationError
from worker.queueing import CeleryPublisher, Publisher
from worker.store import Store

log = logging.getLogger(__name__)

UNKNOWN_RECEIPTS_KEY = "smsq:carrier-receipts:unknown"
UNKNOWN_RECEIPTS_KEPT = 10_000
# Inbound requests kept until applied: a task lost in kombu's pop window (a worker or Redis
# crashing between BRPOP and recording the delivery) is queued again by the reconciler.
INBOX_KEY = "smsq:inbox"  # hash: entry -> JSON [carrier name, request as queued]
INBOX_WATCH_KEY = "smsq:watch:inbox"  # sorted set: entry -> when it is due to be applied


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


class ReceiptIntake:
    """Applies carrier receipts to the store."""

    def __init__(self, store: Store, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher

    def handle(
        self, carrier: Carrier, request: InboundRequest, *, record_unknown: bool = True
    ) -> InboundOutcome:
        """Apply every receipt of one inbound request.

        With `record_unknown` False, unknown carrier ids are only counted: the caller will try
        again shortly, since a fast receipt can overtake the storing of its carrier id.
        """
        try:
            receipts = carrier.parse_receipts(request)
        except ValidationError as exc:
            self._record_unknown(carrier.name, "invalid", exc.message)
            return InboundOutcome(invalid=True)
        applied = unchanged = unknown = 0
        for receipt in receipts:
            result = self.apply(carrier.name, receipt, record_unknown=record_unknown)
            if result is None:
                unknown += 1
            elif result:
                applied += 1
            else:
                unchanged += 1
        return InboundOutcome(applied, unchanged, unknown)

    def apply(
        self, carrier_name: str, receipt: CarrierReceipt, *, record_unknown: bool = True
    ) -> bool | None:
        """Apply one receipt: True if it changed a segment, False if not, None if unknown.

        With `record_unknown`, a receipt for an id we do not know is also parked: the id may
        still be stored (a run that died after the carrier took the segment is resent with the
        same client reference, and the carrier answers with the same id); it is applied then.
        """
        found = self.store.segment_for_carrier_id(carrier_name, receipt.carrier_id)
        if found is None and record_unknown:
            found = self.store.park_receipt(carrier_name, receipt.carrier_id, parked(receipt))
            if found is None:
                self._record_unknown(carrier_name, receipt.carrier_id, receipt.status)
        if found is None:
            return None
        return self.apply_to(found[0], found[1], parked(receipt))

    def apply_to(self, message_id: str, seq: int, receipt: Mapping[str, str | None]) -> bool:
        """Apply a receipt (`parked` fields) to a known segment; True if it changed it."""
        result = self.store.apply_receipt(
            message_id,
            seq,
            receipt["status"] or "",
            receipt.get("error_code"),
            receipt.get("error_message"),
        )
        # The store opened the level-2 receipt in the same atomic step that made the message
        # final, so a crash here loses nothing: the reconciler republishes an open receipt.
        if result.receipt_level:
            self.publisher.publish(POST_RECEIPT, [message_id, result.receipt_level], Queue.DLR)
        return result.segment_changed

    def _record_unknown(self, carrier_name: str, carrier_id: str, detail: str) -> None:
        entry = f"{now_ms()} {carrier_name} {carrier_id} {detail}"
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.lpush(UNKNOWN_RECEIPTS_KEY, entry)
        pipe.ltrim(UNKNOWN_RECEIPTS_KEY, 0, UNKNOWN_RECEIPTS_KEPT - 1)
        pipe.execute()
        log.info("carrier receipt for an unknown id recorded", extra={"carrier": carrier_name})


def parked(receipt: CarrierReceipt) -> dict[str, str | None]:
    """The fields of a receipt that outlive its request (kept while its carrier id is unknown)."""
    return {
        "status": str(receipt.status),
        "error_code": receipt.error_code,
        "error_message": receipt.error_message,
    }
