"""Adapter for smsq's carrier simulator (`smsq carrier-sim`); protocol in `worker.simulator`."""

from __future__ import annotations

from typing import Self

import httpx

from worker.carriers.base import (
    Accepted,
    AdapterContext,
    CarrierAdapter,
    CarrierReceipt,
    InboundRequest,
    Probe,
    ReceiptAuth,
    SegmentSubmission,
)
from worker.carriers.options import HttpEndpoint, SignedReceipts
from worker.carriers.responses import (
    accepted_id,
    lookup,
    optional_str,
    post_json,
    probe_http,
    receipt_fields,
    required_str,
)
from worker.contract import SegmentStatus

# SMPP-style receipt words (`stat:` in a deliver_sm) to segment states.
RECEIPT_STATUSES: dict[str, SegmentStatus] = {
    "DELIVRD": SegmentStatus.DELIVERED,
    "UNDELIV": SegmentStatus.UNDELIVERED,
    "EXPIRED": SegmentStatus.EXPIRED,
    "REJECTD": SegmentStatus.REJECTED,
    "ACCEPTD": SegmentStatus.ACCEPTED,
    "ENROUTE": SegmentStatus.ACCEPTED,
}

# The "no error" value of the SMPP `err:` field.
NO_ERROR = frozenset({"000", "0"})


class SimOptions(HttpEndpoint, SignedReceipts):
    """`[carriers.NAME]` of `type = "sim"`: the simulator's `url` and, optionally, the
    `receipt_secret` it signs receipts with (`smsq carrier-sim --receipt-secret`)."""


class SimCarrier(CarrierAdapter[SimOptions]):
    """Submits segments (UDH + payload, as a real SMSC takes them) to the carrier simulator."""

    type_name = "sim"
    Options = SimOptions
    submits_whole_text = False
    # `smsq carrier-sim` answers a repeated client_ref with the first carrier id (its
    # `--dedupe-client-refs`, on by default), as a carrier honouring an idempotency key does.
    honours_client_ref = True
    receipt_auth = ReceiptAuth.RECEIPT_SECRET
    lists_receipts = True  # `--receipt-batch`

    def __init__(self, client: httpx.Client, base_url: str, name: str = "sim") -> None:
        self.name = name
        self._client = client
        self._submit_url = base_url.rstrip("/") + "/submit"

    @classmethod
    def from_config(cls, name: str, options: SimOptions, context: AdapterContext) -> Self:
        return cls(context.client, options.url, name=name)

    @classmethod
    def probe(cls, options: SimOptions, context: AdapterContext) -> Probe:
        """The simulator's `/stats`."""
        return probe_http(context.client, options.url.rstrip("/") + "/stats")

    def submit(self, segment: SegmentSubmission) -> Accepted:
        """POST one segment to `/submit`; raise a `CarrierError` unless it was accepted."""
        body = {
            "to": segment.to,
            "from": segment.sender,
            "udh": segment.udh.hex(),
            "payload": segment.payload.hex(),
            "data_coding": segment.data_coding,
            "client_ref": segment.client_ref,
            "receipt_url": segment.receipt_url if segment.want_receipt else None,
            "text": segment.text,
        }
        response = post_json(self._client, self._submit_url, body, carrier=self.name)
        return Accepted(carrier_id=accepted_id(response, "carrier_id", carrier=self.name))

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """Parse the simulator's receipts (JSON, form or query); `ValidationError` on garbage."""
        receipts = []
        for item in receipt_fields(request):
            status = lookup(RECEIPT_STATUSES, required_str(item, "status"), field="status")
            err = optional_str(item, "err")
            receipts.append(
                CarrierReceipt(
                    carrier_id=required_str(item, "carrier_id"),
                    status=status,
                    error_code=None if err is None or err in NO_ERROR else err,
                    done_at=optional_str(item, "done_at", max_length=64),
                )
            )
        return receipts
