"""Adapter for Kannel's `sendsms` HTTP interface (smsbox), one request per segment.

Each segment goes with its own UDH (`udh`), `coding` (0 = GSM 7-bit, 2 = UCS-2) and the text
for that segment only, so Kannel sends exactly the parts smsq cut. GSM text travels as UTF-8
(`charset=UTF-8`; Kannel maps it to the GSM alphabet); UCS-2 text travels as its raw UTF-16BE
bytes (`charset=UTF-16BE`), so nothing is transcoded on the way.

Kannel answers `202 0: Accepted for delivery` (or `3: Queued for later delivery`) and gives no
message id, so the carrier id is ours: `<message_id>.<seq>`. It travels in the `dlr-url`,
which Kannel calls back with HTTP GET after filling in its escape codes:
`%d` (the DLR type, a bitmask: see `decode_type`), `%T` (Unix time), `%F` (the SMSC's own
id), `%i` (smsc-id) and `%A` (the SMSC's DLR text, `id:… stat:… err:…` for SMPP; `ACK/…` or
`NACK/0x…/…` for the SMSC's answer to the submission).

Kannel's 202 only means "queued in Kannel". With a `dlr-mask` that asks for the SMSC's answer
(8 accepted and 16 rejected, both in the default 27), the adapter `acknowledges_by_receipt`:
the segment is `sent` until that receipt comes, and the level-1 receipt reports it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Self
from urllib.parse import quote, quote_from_bytes, urlsplit

import httpx
from pydantic import Field

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
from worker.carriers.options import Credentials, HttpEndpoint
from worker.carriers.responses import StatusRule, probe_http, request, required_str
from worker.contract import SegmentStatus
from worker.errors import CarrierRejectedError, ValidationError

SENDSMS_PATH = "/cgi-bin/sendsms"

# Kannel's `coding` values for our data codings.
CODINGS = {0: "0", 8: "2"}

# Bits of Kannel's DLR type `%d` (gw/dlr.h), also the bits of `dlr-mask`.
DELIVERED, FAILED, BUFFERED, SMSC_ACK, SMSC_NACK, INTERMEDIATE = 1, 2, 4, 8, 16, 32
# Kannel (Debian's 1.4.5, and 1.6) reports an SMPP receipt whose `message_state` is EXPIRED as
# 34 (FAILED | 32), and 1.6 one that is UNKNOWN as 66 (FAILED | 64); 32 alone is an
# intermediate notice.
KNOWN_BITS = 127
# What `dlr-mask` asks for by default: delivered, failed, the SMSC's accept and its refusal.
# Not 4 (buffered, intermediate SMSC notices smsq reports nothing for: one more callback per
# segment) nor 32 (asks the SMSC for intermediate notices too).
DEFAULT_DLR_MASK = DELIVERED | FAILED | SMSC_ACK | SMSC_NACK  # 27
# `%d` to a segment state: the first bit set wins (a refusal or failure over anything else).
DLR_TYPES: tuple[tuple[int, SegmentStatus], ...] = (
    (SMSC_NACK, SegmentStatus.REJECTED),  # the SMSC refused the submission
    (FAILED, SegmentStatus.UNDELIVERED),  # refined by `stat:` (`FAILED_STATS`)
    (DELIVERED, SegmentStatus.DELIVERED),
    (SMSC_ACK, SegmentStatus.ACCEPTED),  # the SMSC took it
    (BUFFERED, SegmentStatus.ACCEPTED),  # buffered at the SMSC
    (INTERMEDIATE, SegmentStatus.ACCEPTED),  # an SMSC intermediate notice
)
# A failure's `stat:` (SMPP receipt text) to its state; others stay undelivered.
FAILED_STATS: dict[str, SegmentStatus] = {
    "EXPIRED": SegmentStatus.EXPIRED,
    "REJECTD": SegmentStatus.REJECTED,
    "REJECTED": SegmentStatus.REJECTED,
    "UNDELIV": SegmentStatus.UNDELIVERED,
    "DELETED": SegmentStatus.UNDELIVERED,
    "UNKNOWN": SegmentStatus.UNDELIVERED,
}

# `stat:` and `err:` inside an SMPP DLR text (`%A`).
_STAT = re.compile(r"\bstat:([A-Z]{5,8})", re.IGNORECASE)
_ERR = re.compile(r"\berr:([0-9A-Za-z]{1,8})")
# Kannel's text for the SMSC's refusal: `NACK/0x00000045/<reason>`.
_NACK = re.compile(r"^NACK/(0x[0-9A-Fa-f]{1,8})")


class KannelOptions(HttpEndpoint, Credentials):
    """`[carriers.NAME]` of `type = "kannel"`: smsbox's `url`, the sendsms-user's `username`
    and `password` (or `password_file`), the `smsc` to route through, the `dlr_mask`."""

    smsc: str = ""  # smsc-id to route through; empty: Kannel's own routing
    dlr_mask: int = Field(DEFAULT_DLR_MASK, ge=1, le=63)


class KannelCarrier(CarrierAdapter[KannelOptions]):
    """Submits segments to Kannel's `/cgi-bin/sendsms`; parses its `dlr-url` callbacks."""

    type_name = "kannel"
    Options = KannelOptions
    submits_whole_text = False
    # Receipts: the per-segment token in the `dlr-url` (Kannel signs nothing), whose `id` must
    # be the token's segment (`wrong_segment`).
    receipt_auth = ReceiptAuth.TOKEN

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        username: str,
        password: str,
        name: str = "kannel",
        smsc: str = "",
        dlr_mask: int = DEFAULT_DLR_MASK,
    ) -> None:
        self.name = name
        self._client = client
        self._url = sendsms_url(url)
        self._credentials = (username, password)
        self._smsc = smsc
        self._dlr_mask = dlr_mask
        # Kannel reports the SMSC's answer only when the mask asks for it (8 and 16): then
        # level 1 waits for it (`Accepted.awaiting_ack`); else Kannel's 202 is all there is.
        self.acknowledges_by_receipt = dlr_mask & (SMSC_ACK | SMSC_NACK) == SMSC_ACK | SMSC_NACK

    @classmethod
    def from_config(cls, name: str, options: KannelOptions, context: AdapterContext) -> Self:
        return cls(
            context.client,
            options.url,
            name=name,
            username=options.username,
            password=options.secret,
            smsc=options.smsc,
            dlr_mask=options.dlr_mask,
        )

    @classmethod
    def probe(cls, options: KannelOptions, context: AdapterContext) -> Probe:
        """sendsms with the credentials but no recipient: 403 if they are wrong, else a 4xx
        about `to`."""
        query = httpx.QueryParams({"username": options.username, "password": options.secret})
        return probe_http(context.client, f"{sendsms_url(options.url)}?{query}")

    @classmethod
    def wrong_segment(cls, request: InboundRequest, ref: str) -> str | None:
        """The `id` of a callback must be the carrier id of its token's segment (it is ours, in
        the same URL)."""
        return "id" if request.query.get("id") != segment_carrier_id(ref) else None

    def submit(self, segment: SegmentSubmission) -> Accepted:
        """GET sendsms with this segment; raise a `CarrierError` unless Kannel accepted it."""
        own_id = segment_carrier_id(segment.client_ref)
        url = self._url + "?" + self._query(segment, own_id)
        request(self._client, "GET", url, carrier=self.name, rule=STATUS_RULE)
        # Only queued in Kannel: with the SMSC's answer asked for, that receipt settles it.
        awaiting = self.acknowledges_by_receipt and segment.want_receipt
        return Accepted(carrier_id=own_id, awaiting_ack=awaiting)

    def _query(self, segment: SegmentSubmission, own_id: str) -> str:
        """The sendsms query string, encoded by hand: `udh` and UCS-2 `text` are bytes."""
        coding = CODINGS.get(segment.data_coding)
        if coding is None:
            raise CarrierRejectedError(
                f"data_coding {segment.data_coding} not supported",
                carrier=self.name,
                code="unsupported_coding",
            )
        if segment.data_coding == 8:
            text, charset = quote_from_bytes(segment.payload, safe=""), "UTF-16BE"
        else:
            text, charset = quote(segment.text, safe=""), "UTF-8"
        username, password = self._credentials
        pairs = [
            ("username", quote(username, safe="")),
            ("password", quote(password, safe="")),
            ("from", quote(segment.sender, safe="")),
            ("to", quote(segment.to, safe="")),
            ("text", text),
            ("charset", charset),
            ("coding", coding),
        ]
        if segment.udh:
            pairs.append(("udh", quote_from_bytes(segment.udh, safe="")))
        if self._smsc:
            pairs.append(("smsc", quote(self._smsc, safe="")))
        if segment.want_receipt:
            pairs.append(("dlr-mask", str(self._dlr_mask)))
            pairs.append(("dlr-url", quote(dlr_url(segment.receipt_url, own_id), safe="")))
        return "&".join(f"{key}={value}" for key, value in pairs)

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """One receipt from the query Kannel filled in; `ValidationError` on garbage."""
        query = request.query
        carrier_id = required_str(query, "id")
        kind = required_str(query, "type")
        answer = query.get("answer", "")
        stat = _STAT.search(answer)
        status = decode_type(kind, stat.group(1) if stat else None)
        failed = status in (SegmentStatus.UNDELIVERED, SegmentStatus.REJECTED)
        receipt = CarrierReceipt(
            carrier_id=carrier_id,
            status=status,
            error_code=_error_code(answer) or (f"kannel_dlr_{kind}" if failed else None),
            error_message=answer[:200] if failed and answer else None,
            done_at=_epoch_iso(query.get("ts")),
        )
        if status is SegmentStatus.REJECTED and not int(kind) & SMSC_NACK:
            # A rejection the SMSC reports in a receipt (stat:REJECTD) comes after it took the
            # message. smsbox fetches its dlr-urls concurrently, so this one may overtake the
            # SMSC's ack (8); alone, on a segment still waiting for that ack, it would read as
            # the SMSC's refusal (a final level 1, and no level 2). The acceptance goes first.
            accepted = CarrierReceipt(carrier_id, SegmentStatus.ACCEPTED, done_at=receipt.done_at)
            return [accepted, receipt]
        return [receipt]


def sendsms_url(url: str) -> str:
    """smsbox's sendsms URL: a bare base URL means `/cgi-bin/sendsms`; a path is used as given."""
    return url.rstrip("/") + SENDSMS_PATH if urlsplit(url).path in ("", "/") else url


def segment_carrier_id(ref: str) -> str:
    """Our carrier id for a segment reference `message_id:seq` (Kannel names none):
    `message_id.seq`."""
    message_id, _, seq = ref.rpartition(":")
    return f"{message_id}.{seq}"


def _details(response: httpx.Response) -> tuple[str, str]:
    """Kannel's error `(code, message)`: it answers in plain text, e.g. `Authorization failed
    for sendsms`."""
    status = response.status_code
    return f"kannel_{status}", response.text.strip()[:200] or f"Kannel answered {status}"


# The shared rule, with Kannel's plain-text answers (its 403 for bad credentials and 404/405 for
# a wrong URL blame the account, as for every HTTP carrier: `responses.CARRIER_SIDE_STATUSES`).
STATUS_RULE = StatusRule(details=_details)


def decode_type(kind: str, stat: str | None = None) -> SegmentStatus:
    """The segment state of a DLR type `%d` (a bitmask, `DLR_TYPES`), a failure refined by the
    SMPP `stat:` word (`FAILED_STATS`); `ValidationError` for anything else."""
    value = int(kind) if kind.isascii() and kind.isdigit() and len(kind) <= 3 else 0
    status = next((state for bit, state in DLR_TYPES if value & bit), None)
    if status is None or value > KNOWN_BITS:
        raise ValidationError(f"unknown Kannel DLR type {kind[:8]!r}", field="type")
    if status is not SegmentStatus.UNDELIVERED:
        return status
    refined = FAILED_STATS.get((stat or "").upper())
    if refined is not None:
        return refined
    return SegmentStatus.EXPIRED if value & INTERMEDIATE else status  # 34 = expired


def _error_code(answer: str) -> str | None:
    """The SMSC's error: a non-zero `err:` of a receipt, or the status of a `NACK/0x…`."""
    err = _ERR.search(answer)
    if err and err.group(1).strip("0"):
        return err.group(1)
    nack = _NACK.match(answer)
    return nack.group(1) if nack else None


def dlr_url(receipt_url: str, carrier_id: str) -> str:
    """Our receipt URL with the id and Kannel's escape codes for what it should fill in."""
    joiner = "&" if "?" in receipt_url else "?"
    escapes = "type=%d&ts=%T&smsc=%i&fid=%F&answer=%A"
    return f"{receipt_url}{joiner}id={quote(carrier_id, safe='')}&{escapes}"


def _epoch_iso(value: str | None) -> str | None:
    """Kannel's `%T` (Unix seconds) as ISO 8601 UTC; None when absent or not a number."""
    if not value or not value.isascii() or not value.isdigit():
        return None  # `isdigit` alone accepts '²'
    try:
        return datetime.fromtimestamp(int(value), UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # a timestamp beyond what datetime can hold
        return None
