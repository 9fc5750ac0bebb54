"""Carrier receipts in: correlate each to its segment, update the message, queue client receipts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker.carriers.base import Carrier, CarrierReceipt, InboundRequest
from worker.clock import now_ms
from worker.contract import POST_RECEIPT, Queue, ReceiptLevel
from worker.errors import ValidationError
from worker.queueing import Publisher
from worker.store import Store

log = logging.getLogger(__name__)

UNKNOWN_RECEIPTS_KEY = "smsq:carrier-receipts:unknown"
UNKNOWN_RECEIPTS_KEPT = 10_000


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
        """Apply one receipt: True if it changed a segment, False if not, None if unknown."""
        found = self.store.segment_for_carrier_id(carrier_name, receipt.carrier_id)
        if found is None:
            if record_unknown:
                self._record_unknown(carrier_name, receipt.carrier_id, receipt.status)
            return None
        message_id, seq = found
        result = self.store.apply_receipt(
            message_id, seq, receipt.status, receipt.error_code, receipt.error_message
        )
        if result.became_final:
            self._queue_final_receipt(message_id)
        return result.segment_changed

    def _queue_final_receipt(self, message_id: str) -> None:
        fields = self.store.fields(message_id)
        if fields.get("dlr") != "1":
            return
        if not ReceiptLevel.wants_terminal(int(fields.get("dlr_level") or 1)):
            return
        if self.store.open_receipt(message_id, 2):
            self.publisher.publish(POST_RECEIPT, [message_id, 2], Queue.DLR)

    def _record_unknown(self, carrier_name: str, carrier_id: str, detail: str) -> None:
        entry = f"{now_ms()} {carrier_name} {carrier_id} {detail}"
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.lpush(UNKNOWN_RECEIPTS_KEY, entry)
        pipe.ltrim(UNKNOWN_RECEIPTS_KEY, 0, UNKNOWN_RECEIPTS_KEPT - 1)
        pipe.execute()
        log.info("carrier receipt for an unknown id recorded", extra={"carrier": carrier_name})
