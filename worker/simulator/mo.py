"""The simulator's inbound messages: `POST /mo` makes it send an MO to smsq, as a handset's
reply reaches a carrier and the carrier calls its customer.

    POST /mo {"from": "+4915112340001", "to": "+4930123456", "text": "STOP",
              "url"?: smsq's MO URL (default `--mo-url`), "split"?: true, "order"?: "reverse",
              "reference_bits"?: 8 | 16, "id"?: the carrier id to report}

The MO goes to the URL as the JSON smsq's `sim` carrier takes (`{"from", "to", "text",
"udh"?, "id"}`), signed per Standard Webhooks with `--receipt-secret`, as receipts are. With
`split` the text is encoded and cut as an SMSC would deliver a long message (worker.encoding:
GSM-7 or UCS-2 parts with their concatenation UDH), each part a request of its own, in order
or (`"order": "reverse"`) last part first. The answer lists smsq's answer to each request.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson

from worker.webhooks import signature_headers

JSON_HEADERS = {"content-type": "application/json"}


class MoRequestError(ValueError):
    """A `POST /mo` body the simulator cannot act on."""


def mo_requests(body: Any, default_url: str) -> tuple[str, list[dict[str, str]]]:
    """The URL and the JSON bodies (one per part) a `POST /mo` body asks for."""
    if not isinstance(body, dict):
        raise MoRequestError("body must be a JSON object")
    fields = {}
    for name in ("from", "to", "text"):
        value = body.get(name)
        if not isinstance(value, str) or (name != "text" and not value):
            raise MoRequestError(f"{name!r} must be a string")
        fields[name] = value
    url = body.get("url") or default_url
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise MoRequestError("give 'url' (smsq's /carriers/{name}/mo), or start with --mo-url")
    carrier_id = body.get("id")
    if carrier_id is not None and not isinstance(carrier_id, str):
        raise MoRequestError("'id' must be a string")
    if not body.get("split"):
        return url, [{**fields, "id": carrier_id or f"sim-mo-{uuid.uuid4().hex}"}]
    return url, _parts(fields, body, carrier_id)


def _parts(
    fields: dict[str, str], body: dict[str, Any], carrier_id: str | None
) -> list[dict[str, str]]:
    from worker.encoding import encode_message  # on first use: the CLI stays light

    bits = body.get("reference_bits", 8)
    if bits not in (8, 16):
        raise MoRequestError("'reference_bits' must be 8 or 16")
    reference = uuid.uuid4().int % (1 << bits)
    try:
        encoded = encode_message(fields["text"], reference=reference, reference_bits=bits)
    except ValueError as exc:
        raise MoRequestError(f"text cannot be encoded: {exc}") from exc
    prefix = carrier_id or f"sim-mo-{uuid.uuid4().hex}"
    parts = [
        {**fields, "text": s.text, "udh": s.udh.hex(), "id": f"{prefix}-{s.seq}"}
        for s in encoded.segments
    ]
    order = body.get("order", "in")
    if order not in ("in", "reverse"):
        raise MoRequestError("'order' must be in or reverse")
    return parts[::-1] if order == "reverse" else parts


class MoSender:
    """Sends MOs on one shared `httpx.AsyncClient` (opened at server start)."""

    def __init__(self, default_url: str, secret: str, timeout: float) -> None:
        self.default_url = default_url
        self._secret = secret
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 3.0))
        self._client: httpx.AsyncClient | None = None
        self.sent = 0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, body: Any) -> list[dict[str, Any]]:
        """Send what `body` asks for; smsq's answer to each request (status, JSON or text).
        MoRequestError for a body that asks for nothing sensible."""
        url, requests = mo_requests(body, self.default_url)
        return [await self._post(url, orjson.dumps(item)) for item in requests]

    async def _post(self, url: str, body: bytes) -> dict[str, Any]:
        assert self._client is not None, "MoSender.start() was not awaited"
        headers = JSON_HEADERS
        if self._secret:
            msg_id = f"msg_{uuid.uuid4().hex}"
            headers = {**JSON_HEADERS, **signature_headers([self._secret], msg_id,
                                                           int(time.time()), body)}  # fmt: skip
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return {"status": None, "error": type(exc).__name__}
        self.sent += 1
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        return {"status": response.status_code, "body": answer}
