"""The carrier interface: submit one segment, parse inbound receipts.

Adapters translate httpx exceptions and HTTP status codes into `worker.errors` once, here at the
edge: `CarrierUnavailableError` (retry later), `CarrierRejectedError` (permanent) or
`CarrierUnknownOutcomeError` (the request left and no answer came back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from worker.contract import SegmentStatus


@dataclass(frozen=True, slots=True)
class SegmentSubmission:
    """One segment, ready for a carrier."""

    message_id: str
    seq: int  # 1-based position within the message
    total: int  # number of segments in the message
    to: str  # E.164 with the leading '+'
    sender: str
    udh: bytes  # b"" for a single-segment message
    payload: bytes  # user data after the UDH: packed septets (with fill bits) or UCS-2 BE
    data_coding: int  # 0 = GSM 7-bit default alphabet, 8 = UCS-2
    text: str  # this segment's text
    full_text: str  # the whole message (for carriers that segment themselves)
    receipt_url: str  # where the carrier should send terminal receipts
    want_receipt: bool = True

    @property
    def client_ref(self) -> str:
        """Our idempotency key for this segment at the carrier: `message_id:seq`."""
        return f"{self.message_id}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The carrier took the segment and named it."""

    carrier_id: str
    # Which configured carrier took it, when the adapter routes between several (failover);
    # None means the adapter's own `name`.
    carrier: str | None = None
    # The carrier only queued it (Kannel's 202): whether its SMSC took it comes later, as a
    # receipt (ACCEPTED, REJECTED or a terminal one). Set by adapters that
    # `acknowledges_by_receipt`; the segment is `sent` until then.
    awaiting_ack: bool = False


@dataclass(frozen=True, slots=True)
class CarrierReceipt:
    """One receipt from a carrier about one of its ids."""

    carrier_id: str
    status: SegmentStatus  # DELIVERED, UNDELIVERED, EXPIRED, REJECTED or ACCEPTED (intermediate)
    error_code: str | None = None
    error_message: str | None = None
    done_at: str | None = None  # as the carrier said it, if it did


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An HTTP request a carrier made to `/carriers/{name}/dlr`, as received."""

    method: str
    url: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    form: Mapping[str, str] = field(default_factory=dict)


class Carrier(Protocol):
    """What the sending logic needs from a carrier: an adapter, or one that wraps adapters
    (`worker.carriers.routing.RoutedCarrier`, `worker.metrics.MeasuredCarrier`)."""

    name: str
    # The carrier takes the whole text and segments it itself (Twilio): only the first
    # segment is submitted, with `full_text`.
    submits_whole_text: bool
    # The carrier treats our client reference (`message_id:seq`) as an idempotency key: a
    # segment sent again gets the first answer (the same carrier id) and no second SMS. Without
    # it a segment whose outcome is unknown is never resent.
    honours_client_ref: bool
    # Acceptance only means "queued at a gateway" (Kannel's 202): the answer of the SMSC behind
    # it comes later as a receipt, so `submit` returns `Accepted(awaiting_ack=True)` and the
    # level-1 receipt waits for that answer.
    acknowledges_by_receipt: bool

    def submit(self, segment: SegmentSubmission) -> Accepted:
        """Submit one segment; raise a `CarrierError` subclass when it was not accepted."""
        ...

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """Turn an inbound receipt request into receipts; raise `ValidationError` on garbage."""
        ...
