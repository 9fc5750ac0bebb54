"""Tests for the Twilio adapter (`worker.carriers.twilio.TwilioCarrier`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl

import httpx
import pytest

from worker.carriers.base import Accepted, InboundRequest, SegmentSubmission
from worker.carriers.twilio import TwilioCarrier, signature
from worker.contract import SegmentStatus
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "12345678901234567890123456789012"
PUBLIC = "https://sms.example.com"
CALLBACK_URL = f"{PUBLIC}/carriers/twilio/dlr"


def make_segment(**changes: object) -> SegmentSubmission:
    fields: dict[str, object] = {
        "message_id": "m1",
        "seq": 1,
        "total": 1,
        "to": "+4915112345678",
        "sender": "+15005550006",
        "udh": b"",
        "payload": b"",
        "data_coding": 0,
        "text": "Your code is 123456",
        "full_text": "Your code is 123456",
        "receipt_url": CALLBACK_URL,
    }
    fields.update(changes)
    return SegmentSubmission(**fields)  # type: ignore[arg-type]


class Api:
    """A MockTransport handler standing in for api.twilio.com."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] = lambda request: httpx.Response(
            201, json={"sid": "SM" + "a" * 32, "status": "queued"}
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.requests[-1].content.decode()))


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def carrier(api: Api) -> Iterator[TwilioCarrier]:
    with httpx.Client(transport=httpx.MockTransport(api)) as client:
        yield TwilioCarrier(
            client, "https://api.twilio.test", account_sid=SID, auth_token=TOKEN, public_url=PUBLIC
        )


class TestSubmit:
    def test_posts_the_whole_text_form_encoded(self, carrier: TwilioCarrier, api: Api) -> None:
        """To, From, Body (the whole text) and StatusCallback, with Basic auth, to Messages.json."""
        segment = make_segment(text="part", full_text="the whole text")
        assert carrier.submit(segment) == Accepted("SM" + "a" * 32)
        (request,) = api.requests
        assert request.method == "POST"
        assert (
            str(request.url) == f"https://api.twilio.test/2010-04-01/Accounts/{SID}/Messages.json"
        )
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        pair = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        assert request.headers["authorization"] == f"Basic {pair}"
        assert api.form() == {
            "To": "+4915112345678",
            "From": "+15005550006",
            "Body": "the whole text",
            "StatusCallback": CALLBACK_URL,
        }

    def test_messaging_service_replaces_from(self, api: Api) -> None:
        """With a Messaging Service, `MessagingServiceSid` goes instead of `From`."""
        with httpx.Client(transport=httpx.MockTransport(api)) as client:
            TwilioCarrier(
                client, "https://t", account_sid=SID, auth_token=TOKEN, public_url=PUBLIC,
                messaging_service="MG123",
            ).submit(make_segment())  # fmt: skip
        form = api.form()
        assert form["MessagingServiceSid"] == "MG123"
        assert "From" not in form

    def test_no_receipt_no_callback(self, carrier: TwilioCarrier, api: Api) -> None:
        """Without a receipt wanted, no StatusCallback is set."""
        carrier.submit(make_segment(want_receipt=False))
        assert "StatusCallback" not in api.form()

    @pytest.mark.parametrize(
        ("status", "body", "error", "code"),
        [
            (201, {"sid": "SM1", "status": "queued"}, None, None),
            (
                400,
                {"code": 21211, "message": "Invalid 'To'", "status": 400},
                CarrierRejectedError,
                "21211",
            ),
            (400, {"code": 21606, "message": "not owned"}, CarrierRejectedError, "21606"),
            (401, {"code": 20003, "message": "Authenticate"}, CarrierRejectedError, "20003"),
            (404, {"code": 20404, "message": "not found"}, CarrierRejectedError, "20404"),
            (
                429,
                {"code": 20429, "message": "Too Many Requests"},
                CarrierUnavailableError,
                "20429",
            ),
            (500, {"code": 20500, "message": "Internal"}, CarrierUnavailableError, "20500"),
            (503, "<html>down</html>", CarrierUnavailableError, "http_503"),
        ],
    )
    def test_status_codes(
        self,
        carrier: TwilioCarrier,
        api: Api,
        status: int,
        body: object,
        error: type[CarrierError] | None,
        code: str | None,
    ) -> None:
        """2xx creates; 5xx and 429 are transient; 4xx permanent, with Twilio's error code."""

        def answer(request: httpx.Request) -> httpx.Response:
            if isinstance(body, str):
                return httpx.Response(status, text=body)
            return httpx.Response(status, json=body)

        api.answer = answer
        if error is None:
            assert carrier.submit(make_segment()).carrier_id == "SM1"
            return
        with pytest.raises(error) as caught:
            carrier.submit(make_segment())
        assert (caught.value.code, caught.value.status_code) == (code, status)
        if isinstance(caught.value, CarrierRejectedError):  # sender not owned, auth, account
            assert caught.value.carrier_side is (code in ("21606", "20003", "20404"))

    def test_created_without_sid_is_unknown(self, carrier: TwilioCarrier, api: Api) -> None:
        """A 201 without a sid may have sent it: unknown outcome, not a retry."""
        api.answer = lambda request: httpx.Response(201, json={"status": "queued"})
        with pytest.raises(CarrierUnknownOutcomeError):
            carrier.submit(make_segment())

    def test_read_timeout_is_unknown(self, carrier: TwilioCarrier, api: Api) -> None:
        """No answer after sending is an unknown outcome."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow")

        api.answer = fail
        with pytest.raises(CarrierUnknownOutcomeError):
            carrier.submit(make_segment())


def signed(params: dict[str, str], url: str = CALLBACK_URL, *, received: str | None = None,
           token: str = TOKEN) -> InboundRequest:  # fmt: skip
    """A status callback as the API hands it to the worker (`received` = the URL it saw)."""
    return InboundRequest(
        method="POST",
        url=received or url,
        query={},
        headers={"x-twilio-signature": signature(url, params, token)},
        form=params,
    )


CALLBACK = {
    "AccountSid": SID,
    "MessageSid": "SM" + "b" * 32,
    "SmsSid": "SM" + "b" * 32,
    "MessageStatus": "delivered",
    "SmsStatus": "delivered",
    "To": "+4915112345678",
    "From": "+15005550006",
    "ApiVersion": "2010-04-01",
}


class TestSignature:
    def test_matches_twilios_published_example(self) -> None:
        """The algorithm of Twilio's security docs: URL + sorted name/value pairs, HMAC-SHA1."""
        url = "https://mycompany.com/myapp.php?foo=1&bar=2"
        params = {"Digits": "1234", "To": "+18005551212", "From": "+14158675310",
                  "Caller": "+14158675310", "CallSid": "CA1234567890ABCDE"}  # fmt: skip
        payload = url + "".join(k + params[k] for k in sorted(params))
        digest = hmac.new(b"12345", payload.encode(), hashlib.sha1).digest()
        assert signature(url, params, "12345") == base64.b64encode(digest).decode()


class TestParseReceipts:
    @pytest.mark.parametrize(
        ("status", "error_code", "expected"),
        [
            ("queued", None, SegmentStatus.ACCEPTED),
            ("sent", None, SegmentStatus.ACCEPTED),
            ("delivered", None, SegmentStatus.DELIVERED),
            ("read", None, SegmentStatus.DELIVERED),
            ("undelivered", "30003", SegmentStatus.UNDELIVERED),
            ("failed", "30008", SegmentStatus.UNDELIVERED),
            ("failed", "30036", SegmentStatus.EXPIRED),
            ("canceled", None, SegmentStatus.UNDELIVERED),
        ],
    )
    def test_statuses(
        self,
        carrier: TwilioCarrier,
        status: str,
        error_code: str | None,
        expected: SegmentStatus,
    ) -> None:
        """MessageStatus gives the state; ErrorCode 30036 (validity ran out) means expired."""
        params = {**CALLBACK, "MessageStatus": status}
        if error_code:
            params["ErrorCode"] = error_code
        (receipt,) = carrier.parse_receipts(signed(params))
        assert receipt.carrier_id == CALLBACK["MessageSid"]
        assert receipt.status is expected
        assert receipt.error_code == error_code

    def test_url_is_rebuilt_from_the_public_url(self, carrier: TwilioCarrier) -> None:
        """Behind a proxy the API sees another URL; the signature is checked on the public one."""
        request = signed(CALLBACK, received="http://10.0.0.5:8000/carriers/twilio/dlr")
        assert carrier.parse_receipts(request)[0].status is SegmentStatus.DELIVERED

    def test_query_string_is_part_of_the_signed_url(self, carrier: TwilioCarrier) -> None:
        """A query on the callback URL is signed with it."""
        url = f"{CALLBACK_URL}?tag=a%20b"
        request = signed(CALLBACK, url, received="http://internal/carriers/twilio/dlr?tag=a%20b")
        assert carrier.parse_receipts(request)

    def test_default_port_either_way(self, carrier: TwilioCarrier) -> None:
        """A signature made over the URL with `:443` also validates."""
        request = signed(CALLBACK, "https://sms.example.com:443/carriers/twilio/dlr")
        assert carrier.parse_receipts(request)

    @pytest.mark.parametrize(
        "request_",
        [
            signed(CALLBACK, token="another-token"),
            signed(
                CALLBACK,
                "https://other.example.com/carriers/twilio/dlr",  # replayed from elsewhere
                received="http://10.0.0.5:8000/carriers/twilio/dlr",
            ),
            InboundRequest(method="POST", url=CALLBACK_URL, query={}, headers={}, form=CALLBACK),
        ],
        ids=["wrong-token", "other-url", "unsigned"],
    )
    def test_bad_signature_is_invalid(
        self, carrier: TwilioCarrier, request_: InboundRequest
    ) -> None:
        """A wrong token, another URL or no signature at all is a ValidationError."""
        with pytest.raises(ValidationError, match="Signature"):
            carrier.parse_receipts(request_)

    def test_tampered_params_are_invalid(self, carrier: TwilioCarrier) -> None:
        """Changing a signed parameter breaks the signature."""
        request = signed(CALLBACK)
        forged = InboundRequest(
            method="POST", url=request.url, query={}, headers=request.headers,
            form={**CALLBACK, "MessageStatus": "undelivered"},
        )  # fmt: skip
        with pytest.raises(ValidationError):
            carrier.parse_receipts(forged)

    @pytest.mark.parametrize(
        "params",
        [
            {k: v for k, v in CALLBACK.items() if k != "MessageSid"},
            {**CALLBACK, "MessageStatus": "receiving"},
            {k: v for k, v in CALLBACK.items() if k != "MessageStatus"},
        ],
        ids=["no-sid", "inbound-status", "no-status"],
    )
    def test_signed_garbage_is_invalid(
        self, carrier: TwilioCarrier, params: dict[str, str]
    ) -> None:
        """A signed callback without a sid or with a status we do not know is invalid."""
        with pytest.raises(ValidationError):
            carrier.parse_receipts(signed(params))
