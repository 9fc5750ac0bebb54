"""Generic JSON carrier; by default it speaks smsq's own `POST /sms/send`, so smsq can relay."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Self
from urllib.parse import urlsplit

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
from worker.carriers.options import Credentials, HttpEndpoint, SignedReceipts
from worker.carriers.responses import (
    accepted_id,
    lookup,
    optional_str,
    post_json,
    probe_http,
    receipt_fields,
    required_str,
)
from worker.carriers.sim import RECEIPT_STATUSES as SMPP_STATUSES
from worker.contract import ReceiptLevel, SegmentStatus

# Our logical request fields to the names on the wire: smsq's own `POST /sms/send` body.
DEFAULT_FIELDS: dict[str, str] = {
    "to": "to",
    "from": "from",
    "content": "content",
    "dlr": "dlr",
    "dlr_url": "dlr-url",
    "dlr_level": "dlr-level",
    "client_ref": "client_ref",
}

# smsq's receipt `status` words (and, for other carriers, the SMPP words) to segment states.
RECEIPT_STATUSES: dict[str, SegmentStatus] = {
    **SMPP_STATUSES,
    "DELIVERED": SegmentStatus.DELIVERED,
    "UNDELIVERED": SegmentStatus.UNDELIVERED,
    "EXPIRED": SegmentStatus.EXPIRED,
    "REJECTED": SegmentStatus.REJECTED,
    "ACCEPTED": SegmentStatus.ACCEPTED,
    # An upstream smsq that gave up (or was cancelled) never delivered the message.
    "FAILED": SegmentStatus.UNDELIVERED,
    "CANCELLED": SegmentStatus.UNDELIVERED,
}


class HttpOptions(HttpEndpoint, Credentials, SignedReceipts):
    """`[carriers.NAME]` of `type = "http"`: `url` (a bare base URL means an upstream smsq's
    `/sms/send`), `username` + `password` for basic auth or a `password` alone as a bearer key
    (an upstream smsq's API key), and the `receipt_secret` its receipts are signed with."""


class HttpCarrier(CarrierAdapter[HttpOptions]):
    """Submits whole messages as JSON to a configurable URL and field layout."""

    type_name = "http"
    Options = HttpOptions
    submits_whole_text = True
    receipt_auth = ReceiptAuth.RECEIPT_SECRET
    lists_receipts = True

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        name: str = "http",
        auth_header: tuple[str, str] | None = None,
        fields: Mapping[str, str | None] | None = None,
        id_field: str = "id",
        dlr_level: int = ReceiptLevel.TERMINAL,
    ) -> None:
        """`fields` renames (or, with None, drops) request fields; `id_field` may be dotted."""
        unknown = set(fields or {}) - set(DEFAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown request fields: {sorted(unknown)}")
        merged: dict[str, str | None] = {**DEFAULT_FIELDS, **(fields or {})}
        self.name = name
        self._client = client
        self._url = url
        self._headers = dict([auth_header]) if auth_header else {}
        self._fields = {key: wire for key, wire in merged.items() if wire}
        self._id_field = id_field
        self._dlr_level = dlr_level

    @classmethod
    def from_config(cls, name: str, options: HttpOptions, context: AdapterContext) -> Self:
        return cls(
            context.client, _send_url(options.url), name=name, auth_header=_auth_header(options)
        )

    @classmethod
    def probe(cls, options: HttpOptions, context: AdapterContext) -> Probe:
        """A GET of the configured URL, with the credentials when there is a username."""
        auth = (options.username, options.secret) if options.username else None
        return probe_http(context.client, options.url.rstrip("/"), auth=auth)

    def submit(self, segment: SegmentSubmission) -> Accepted:
        """POST the whole message; raise a `CarrierError` unless it was accepted."""
        values: dict[str, object] = {
            "to": segment.to,
            "from": segment.sender,
            "content": segment.full_text,
            "dlr": segment.want_receipt,
            "dlr_url": segment.receipt_url if segment.want_receipt else None,
            "dlr_level": self._dlr_level,
            "client_ref": segment.client_ref,
        }
        body = {
            wire: values[key]
            for key, wire in self._fields.items()
            if values[key] is not None  # an upstream smsq rejects `"dlr-url": null`
        }
        response = post_json(
            self._client, self._url, body, carrier=self.name, headers=self._headers
        )
        return Accepted(carrier_id=accepted_id(response, self._id_field, carrier=self.name))

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """Parse smsq-style receipts (JSON body, form or query); `ValidationError` on garbage."""
        receipts = []
        for item in receipt_fields(request):
            status = lookup(RECEIPT_STATUSES, required_str(item, "status"), field="status")
            code, message = _receipt_error(item)
            receipts.append(
                CarrierReceipt(
                    carrier_id=required_str(item, "id"),
                    status=status,
                    error_code=code,
                    error_message=message,
                    done_at=optional_str(item, "done_at", max_length=64),
                )
            )
        return receipts


def _receipt_error(item: Mapping[str, object]) -> tuple[str | None, str | None]:
    """`error` as smsq's `{"code", "message"}` object, a bare code, or flat `error_code`."""
    error = item.get("error")
    if isinstance(error, dict):
        return optional_str(error, "code", max_length=64), optional_str(error, "message")
    if isinstance(error, str) and error:
        return error[:64], optional_str(item, "error_message")
    return optional_str(item, "error_code", max_length=64), optional_str(item, "error_message")


def _send_url(url: str) -> str:
    """A bare base URL points at smsq's own send endpoint, the default request shape."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/sms/send"
    return url


def _auth_header(options: Credentials) -> tuple[str, str] | None:
    """Basic auth with a username, else a bearer token (an upstream smsq API key)."""
    password = options.secret
    if options.username:
        pair = f"{options.username}:{password}".encode()
        return ("authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    if password:
        return ("authorization", f"Bearer {password}")
    return None
