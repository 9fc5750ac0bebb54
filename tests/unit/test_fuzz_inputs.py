"""Hostile input to the pure edges: the encoding engine and every carrier's receipt parser.

Whatever arrives (any Unicode, lone surrogates, control characters, any coding or language
name; any receipt request: query, form, headers, body, near-valid fields), the only way out
besides a result is the documented error: `ValidationError` (encoding, parsers) or
`ValueError` (decoding octets). Anything else is a crash.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.carriers.base import CarrierReceipt, InboundRequest
from worker.carriers.registry import carrier_for_name
from worker.carriers.twilio import SIGNATURE_HEADER, signature
from worker.encoding import decode_segment, encode_message, summarize
from worker.errors import ValidationError
from worker.settings import Settings

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any code point, lone surrogates included, with controls and ESC more often than chance.
hostile_text = st.text(
    st.characters(codec=None) | st.sampled_from("\x00\x1b\r\n\u200d\ufeff"),
    max_size=400,
)
codings = st.one_of(
    st.sampled_from(["auto", "GSM7", "UCS2", "UTF-8", "gsm", "", "8", "0", "latin1"]),
    st.integers(-2, 300),
    st.text(max_size=8),
)
languages = st.one_of(st.none(), st.integers(-1, 20), st.sampled_from(["tr", "es", "pt"]))


class TestEncodingEngine:
    @FUZZ
    @given(hostile_text, codings, languages, st.booleans(), st.integers(1, 255))
    def test_summarize_and_encode_only_refuse_with_validation_errors(
        self, text: str, coding: Any, national: Any, smart: bool, max_segments: int
    ) -> None:
        """Counting and encoding any text under any options answers or says why, never
        crashes, and both agree on the outcome."""
        options: dict[str, Any] = {"smart": smart, "national": national}
        try:
            summary = summarize(text, coding, max_segments=max_segments, **options)
        except ValidationError as refused:
            with pytest.raises(type(refused)):
                encode_message(text, coding, max_segments=max_segments, **options)
            return
        encoded = encode_message(text, coding, max_segments=max_segments, **options)
        assert (encoded.encoding, len(encoded.segments)) == (summary.encoding, summary.segments)

    @pytest.mark.parametrize("text", ["\ud800", "code \udfff here"])
    def test_a_lone_surrogate_is_an_encoding_error(self, text: str) -> None:
        """Text that is not valid Unicode is refused as such."""
        with pytest.raises(ValidationError):
            summarize(text)

    @FUZZ
    @given(
        st.binary(max_size=20),
        st.binary(max_size=160),
        st.sampled_from([0, 8, 4, 245]),
        st.none() | st.integers(0, 200),
    )
    def test_decoding_any_octets_raises_only_value_errors(
        self, udh: bytes, payload: bytes, data_coding: int, septets: int | None
    ) -> None:
        """Any UDH, payload and data coding decode or raise ValueError (as documented)."""
        try:
            decoded = decode_segment(udh, payload, data_coding, septets=septets)
        except ValueError:
            return
        assert isinstance(decoded.text, str)


# Field names the parsers look for, and values near what carriers send.
KNOWN_KEYS = [
    "status", "carrier_id", "id", "err", "done_at", "error", "type", "ts", "answer", "smsc",
    "MessageSid", "MessageStatus", "ErrorCode", "RawDlrDoneDate", "level", "message_status",
]  # fmt: skip
NEAR_VALUES = [
    "DELIVRD", "delivered", "UNDELIV", "EXPIRED", "1", "2", "8", "16", "0", "-1", "²", "٣",
    "99999999999999999999", "1e400", "id:1 sub:001 dlvrd:001 stat:EXPIRED err:000",
    "SM0123456789abcdef", "failed", "30008",
]  # fmt: skip
values = st.one_of(st.sampled_from(NEAR_VALUES), st.text(max_size=30))


def to_json(value: object) -> bytes:
    return json.dumps(value).encode()  # any integer, where orjson stops at 64 bits


fields = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=12), values, max_size=8)
bodies = st.one_of(
    st.binary(max_size=200),
    fields.map(orjson.dumps),
    st.lists(fields, max_size=3).map(orjson.dumps),
    st.lists(st.one_of(st.integers(), st.text(), st.none()), max_size=3).map(to_json),
    fields.map(lambda f: urlencode(f).encode()),
)
urls = st.one_of(
    st.just("http://api.test/carriers/c/dlr"),
    st.text(max_size=40).map(lambda t: "http://api.test/carriers/c/dlr?" + t),
    st.text(max_size=40),
)
TOKEN = "twilio-auth-token"


def parse(name: str, data: st.DataObject) -> list[CarrierReceipt]:
    settings_ = Settings(
        carrier=name, carrier_url="http://carrier.test", carrier_username="AC0123",
        carrier_password=TOKEN, public_url="http://api.test",
    )  # fmt: skip
    client = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(500)))
    carrier = carrier_for_name(name, settings_, client)
    method = data.draw(st.sampled_from(["GET", "POST"]))
    form = data.draw(fields)
    url = data.draw(urls)
    headers = data.draw(
        st.dictionaries(st.sampled_from(["content-type", SIGNATURE_HEADER]), values)
    )
    if name == "twilio" and data.draw(st.booleans()):
        # Signed as Twilio would, so the fields behind the signature check are reached too.
        headers[SIGNATURE_HEADER] = signature(url, form if method == "POST" else {}, TOKEN)
    request = InboundRequest(
        method=method, url=url, query=data.draw(fields), headers=headers,
        body=data.draw(bodies), form=form,
    )  # fmt: skip
    try:
        return carrier.parse_receipts(request)
    finally:
        client.close()


class TestReceiptParsers:
    @pytest.mark.parametrize(
        "name",
        [
            "sim",
            "http",
            "kannel",
            "twilio",
        ],
    )
    @FUZZ
    @given(data=st.data())
    def test_any_request_parses_or_is_refused(self, name: str, data: st.DataObject) -> None:
        """Whatever a caller sends to /carriers/{name}/dlr, the parser returns receipts or
        raises ValidationError."""
        try:
            receipts = parse(name, data)
        except ValidationError:
            return
        assert all(isinstance(r, CarrierReceipt) for r in receipts)

    @pytest.mark.parametrize("ts", ["²", "99999999999999999999"])
    def test_kannel_refuses_an_odd_timestamp(self, ts: str) -> None:
        """A Kannel receipt with a malformed `ts` is a ValidationError (or ignored), no crash."""
        settings_ = Settings(carrier="kannel", carrier_url="http://kannel.test")
        with httpx.Client() as client:
            carrier = carrier_for_name("kannel", settings_, client)
            request = InboundRequest(
                method="GET", url="http://api.test/", headers={},
                query={"id": "k1", "type": "1", "ts": ts},
            )  # fmt: skip
            with contextlib.suppress(ValidationError):
                carrier.parse_receipts(request)
