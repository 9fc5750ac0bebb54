"""The forms carriers send inbound messages in, to `/carriers/{name}/mo`.

- `kannel`: smsbox's `sms-service` fetching its `get-url` (docs/inbound.md has the group):
  `from=%p&to=%P&text=%b&udh=%u&coding=%c&charset=%C&id=%I` as query parameters. `text` is
  the message as bytes (`%b`; `%a` works for plain text), decoded by `coding` / `charset`:
  2 or `UTF-16BE` is UCS-2, else the charset Kannel names (UTF-8 when it names none, or one
  Python does not know); `udh` is the binary header of a part Kannel did not reassemble.
- `twilio`: the inbound message webhook (a form POST): `From`, `To`, `Body`, `MessageSid`.
  Twilio reassembles multipart messages itself.
- `sim`, `http`: JSON, one object or a list of them: `{"from", "to", "text", "udh"?: hex,
  "id"?: the carrier's id}`; `smsq carrier-sim`'s `POST /mo` sends this form.

A request that does not fit its form is refused (ValidationError naming the parameter).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from worker.carriers.base import InboundRequest
from worker.errors import ValidationError

MAX_ADDRESS = 32  # characters of a `from` / `to`
MAX_TEXT_BYTES = 16_384  # far more than 255 parts of UCS-2
MAX_UDH = 32  # octets
MAX_PER_REQUEST = 100  # MOs in one JSON list


@dataclass(frozen=True, slots=True)
class InboundMo:
    """One MO (or one part) as a carrier reported it."""

    sender: str
    recipient: str
    text: str
    udh: bytes = b""
    carrier_id: str = ""


def parse(carrier_type: str, request: InboundRequest) -> list[InboundMo]:
    """The MOs of a request to `/carriers/{name}/mo` of a carrier of that type."""
    parser = PARSERS.get(carrier_type)
    if parser is None:
        raise ValidationError(f"{carrier_type} carriers send no MOs over HTTP", code="invalid")
    return parser(request)


def parse_kannel(request: InboundRequest) -> list[InboundMo]:
    """Kannel's sms-service GET (or a POST of the same form)."""
    query = urlsplit(request.url).query
    if request.method == "POST" and request.body and not query:
        query = request.body.decode("latin-1")
    # Latin-1 keeps every escaped byte as one character: `%b` may be UCS-2.
    fields = dict(parse_qsl(query, keep_blank_values=True, encoding="latin-1"))
    raw = fields.get("text", "").encode("latin-1")
    if len(raw) > MAX_TEXT_BYTES:
        raise ValidationError("text is too long", field="text", code="too_long")
    coding, charset = fields.get("coding", "").strip(), fields.get("charset", "").strip()
    return [
        InboundMo(
            sender=_address(_utf8(fields.get("from", "")), "from"),
            recipient=_address(_utf8(fields.get("to", "")), "to"),
            text=kannel_text(raw, coding, charset),
            udh=_udh(fields.get("udh", "").encode("latin-1")),
            carrier_id=_utf8(fields.get("id", ""))[:64],
        )
    ]


def kannel_text(raw: bytes, coding: str, charset: str) -> str:
    """The text of Kannel's `%b`: UCS-2 for coding 2 (or a UTF-16 charset), else in the
    charset Kannel names, UTF-8 when none (or one Python does not know); bytes that do not
    decode become U+FFFD rather than failing the message."""
    name = charset.upper().replace("_", "-")
    if coding == "2" or name in ("UTF-16BE", "UTF16-BE", "UCS-2", "UCS2", "UTF-16"):
        return raw.decode("utf-16-be", "replace")
    try:
        codec = codecs.lookup(name).name if name and name not in ("GSM", "BINARY") else "utf-8"
    except LookupError:
        codec = "utf-8"
    return raw.decode(codec, "replace")


def parse_twilio(request: InboundRequest) -> list[InboundMo]:
    """Twilio's inbound message webhook (form POST; a GET carries the same as a query)."""
    fields: Mapping[str, str] = request.form if request.method == "POST" else request.query
    body = fields.get("Body", "")
    if len(body.encode()) > MAX_TEXT_BYTES:
        raise ValidationError("Body is too long", field="Body", code="too_long")
    sid = fields.get("MessageSid") or fields.get("SmsSid") or ""
    return [
        InboundMo(
            sender=_address(fields.get("From", ""), "From"),
            recipient=_address(fields.get("To", ""), "To"),
            text=body,
            carrier_id=sid[:64],
        )
    ]


def parse_json(request: InboundRequest) -> list[InboundMo]:
    """`{"from", "to", "text", "udh"?, "id"?}`, or a list of them."""
    try:
        data: Any = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise ValidationError("the body must be JSON", field="body", code="invalid") from None
    items = data if isinstance(data, list) else [data]
    if not items or len(items) > MAX_PER_REQUEST:
        raise ValidationError(
            f"1 to {MAX_PER_REQUEST} MOs per request", field="body", code="invalid"
        )
    return [_json_mo(item, index if isinstance(data, list) else None)
            for index, item in enumerate(items)]  # fmt: skip


def _json_mo(item: Any, index: int | None) -> InboundMo:
    where = "" if index is None else f"{index}."
    if not isinstance(item, dict):
        raise ValidationError("an MO must be a JSON object", field=where.rstrip(".") or "body")

    def text_field(name: str, *, required: bool = True) -> str:
        value = item.get(name)
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            raise ValidationError(f"{where}{name} must be a string", field=f"{where}{name}")
        return value

    text = text_field("text")
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise ValidationError("text is too long", field=f"{where}text", code="too_long")
    try:
        udh = bytes.fromhex(text_field("udh", required=False))
    except ValueError:
        raise ValidationError("udh must be hex", field=f"{where}udh") from None
    return InboundMo(
        sender=_address(text_field("from"), f"{where}from"),
        recipient=_address(text_field("to"), f"{where}to"),
        text=text,
        udh=_udh(udh, f"{where}udh"),
        carrier_id=text_field("id", required=False)[:64],
    )


def _address(value: str, field: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_ADDRESS or not value.isprintable():
        raise ValidationError(f"{field} must be a phone number or short code", field=field)
    return value


def _udh(udh: bytes, field: str = "udh") -> bytes:
    if len(udh) > MAX_UDH:
        raise ValidationError(f"{field} is too long", field=field, code="too_long")
    return udh


def _utf8(latin1: str) -> str:
    """A query value read as Latin-1 (bytes kept), as the UTF-8 text it is."""
    return latin1.encode("latin-1").decode("utf-8", "replace")


PARSERS: dict[str, Callable[[InboundRequest], list[InboundMo]]] = {
    "kannel": parse_kannel,
    "twilio": parse_twilio,
    "sim": parse_json,
    "http": parse_json,
}
