"""The carrier interface: what sending needs (`Carrier`), and the shape of an adapter plugin.

Adapters translate httpx exceptions and HTTP status codes into `worker.errors` once, here at the
edge, by one shared rule (`worker.carriers.responses`): `CarrierUnavailableError` (retry later),
`CarrierRejectedError` (permanent) or `CarrierUnknownOutcomeError` (the request left and no
answer came back).

Writing an adapter (docs/carriers.md, "Writing a carrier adapter") takes one module:

- an options model, a subclass of `worker.carriers.options.AdapterOptions` (unknown keys are
  refused): the keys of a `[carriers.NAME]` table besides the common ones (`type`, `rate`,
  `burst`, `concurrency`, `breaker_*`);
- a class deriving from `CarrierAdapter[ItsOptions]` that declares its `type_name` (the
  table's `type`, a choice of `SMSQ_CARRIER`), its `Options` and its capabilities
  (`submits_whole_text`, `honours_client_ref`, `acknowledges_by_receipt`, `receipt_auth`,
  `lists_receipts`, `paces_itself`), and implements `from_config`, `probe` (what
  `smsq carriers check` runs), `submit` and `parse_receipts` (and `receipt_signature` for
  `ReceiptAuth.SIGNATURE`);
- its registration: a built-in adapter is listed in `worker.carriers.adapters.BUILT_IN`,
  any other calls `worker.carriers.adapters.register(TheClass)` when imported.

Nothing else learns its name: the settings' choices, the carriers file's `type`, the mapping
of `SMSQ_CARRIER_<KEY>` onto a single carrier's options, the health check, routing and receipt
authentication all ask the class. tests/unit/test_carrier_conformance.py runs every registered
adapter, given its test data, through the same checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, Self, TypeVar

from worker.carriers.options import AdapterOptions
from worker.contract import SegmentStatus

if TYPE_CHECKING:
    import httpx
    import redis

    from worker.settings import Settings


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


OptionsT = TypeVar("OptionsT", bound=AdapterOptions)
# Whether a receipt request bears the carrier's valid signature.
# Checks a carrier's signature on a request to one of its routes (`dlr` receipts, `mo` inbound).
SignatureCheck = Callable[[InboundRequest, str], bool]


class ReceiptAuth(StrEnum):
    """How a carrier's receipt requests to `/carriers/{name}/dlr` prove where they come from
    (`worker.receipts.tokens.CallbackAuth`). Every receipt URL smsq hands a carrier carries the
    segment's token, and a token that is present must be valid."""

    # The token alone (Kannel calls back the URL it was given, unsigned).
    TOKEN = "token"
    # The token, or a Standard Webhooks signature with the options' `receipt_secret`
    # (`worker.carriers.options.SignedReceipts`), which may cover many segments (sim, http).
    RECEIPT_SECRET = "receipt_secret"
    # The carrier's own signature, always required (Twilio): `receipt_signature`.
    SIGNATURE = "signature"


@dataclass(frozen=True, slots=True)
class Probe:
    """One carrier's health: `ok`, and what was seen."""

    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What an adapter is built and probed with: the process's HTTP client (its timeouts
    included) and settings, and its Redis client when it has one."""

    client: httpx.Client
    settings: Settings
    redis: redis.Redis | None = None


class CarrierAdapter(ABC, Generic[OptionsT]):
    """A `Carrier` built from one `[carriers.NAME]` table (the module doc says what to declare)."""

    type_name: ClassVar[str]  # the table's `type`
    Options: ClassVar[type[AdapterOptions]]  # the model of its keys: the `OptionsT` it takes
    name: str  # the configured carrier's name (`/carriers/{name}/dlr`)
    # Capabilities (`Carrier` says what each means).
    submits_whole_text: bool
    honours_client_ref: bool = False
    acknowledges_by_receipt: bool = False
    receipt_auth: ClassVar[ReceiptAuth] = ReceiptAuth.TOKEN
    # A receipt request may list the receipts of many segments (a JSON list), so the API
    # counts them against `SMSQ_CARRIER_RECEIPTS_MAX`; otherwise a request carries one.
    lists_receipts: ClassVar[bool] = False
    # The carrier's `rate` is kept by the adapter's own process (one that holds the carrier's
    # sessions and paces what it sends on them), not by the workers' shared rate limiter.
    paces_itself: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_config(cls, name: str, options: OptionsT, context: AdapterContext) -> Self:
        """The adapter for carrier `name` configured with `options`; secrets are read here."""

    @classmethod
    @abstractmethod
    def probe(cls, options: OptionsT, context: AdapterContext) -> Probe:
        """Ask the carrier something harmless (never an SMS) and classify the answer:
        reachable, credentials refused, or down."""

    @abstractmethod
    def submit(self, segment: SegmentSubmission) -> Accepted:
        """Submit one segment; raise a `CarrierError` subclass when it was not accepted."""

    @abstractmethod
    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """Turn an inbound receipt request into receipts; raise `ValidationError` on garbage."""

    @classmethod
    def receipt_signature(
        cls, options: OptionsT, *, name: str, public_url: str
    ) -> SignatureCheck | None:
        """For `ReceiptAuth.SIGNATURE`: the check of a receipt request's signature, its secret
        read once, here; None for the others."""
        return None

    @classmethod
    def wrong_segment(cls, request: InboundRequest, ref: str) -> str | None:
        """The field of `request` naming another segment than `ref` (its token's), when the
        request alone shows it (carriers whose ids are ours: Kannel); else None, and the
        worker checks each receipt's carrier id against the segment when it applies it."""
        return None
