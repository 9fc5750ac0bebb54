"""Tests for the generic JSON carrier (`worker.carriers.http.HttpCarrier`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.carriers.base import Accepted, CarrierReceipt, InboundRequest, SegmentSubmission
from worker.carriers.http import HttpCarrier
from worker.contract import SegmentStatus
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)

URL = "http://upstream.test/sms/send"


def make_segment(**changes: object) -> SegmentSubmission:
    fields: dict[str, object] = {
        "message_id": "m1",
        "seq": 1,
        "total": 2,
        "to": "+4915112345678",
        "sender": "smsq",
        "udh": bytes.fromhex("050003a70201"),
        "payload": b"\x00h",
        "data_coding": 8,
        "text": "first half",
        "full_text": "first half, second half",
        "receipt_url": "http://api.test/carriers/http/dlr",
    }
    fields.update(changes)
    return SegmentSubmission(**fields)  # type: ignore[arg-type]


class Upstream:
    """A MockTransport handler standing in for an upstream smsq."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] = lambda request: httpx.Response(
            202, json={"id": "up-1", "status": "queued"}
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def client(upstream: Upstream) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(upstream)) as client:
        yield client


@pytest.fixture
def carrier(client: httpx.Client) -> HttpCarrier:
    return HttpCarrier(client, URL, auth_header=("authorization", "Bearer k"))


class TestSubmit:
    def test_posts_smsqs_own_send_body(self, carrier: HttpCarrier, upstream: Upstream) -> None:
        """By default the body is what smsq's `POST /sms/send` takes, with the whole text."""
        assert carrier.submit(make_segment()) == Accepted("up-1")
        (request,) = upstream.requests
        assert (request.method, str(request.url)) == ("POST", URL)
        assert request.headers["authorization"] == "Bearer k"
        assert json.loads(request.content) == {
            "to": "+4915112345678",
            "from": "smsq",
            "content": "first half, second half",
            "dlr": True,
            "dlr-url": "http://api.test/carriers/http/dlr",
            "dlr-level": 2,
            "client_ref": "m1:1",
        }
        assert carrier.submits_whole_text is True

    def test_leaves_out_the_receipt_url_when_none_is_wanted(
        self, carrier: HttpCarrier, upstream: Upstream
    ) -> None:
        """Without a receipt the body says `dlr: false` and carries no `dlr-url`."""
        carrier.submit(make_segment(want_receipt=False))
        body = json.loads(upstream.requests[0].content)
        assert body["dlr"] is False
        assert "dlr-url" not in body

    def test_renames_and_drops_fields(self, client: httpx.Client, upstream: Upstream) -> None:
        """The field map renames fields, None drops them; the id is read at a dotted path."""
        upstream.answer = lambda request: httpx.Response(201, json={"data": {"sid": "SM9"}})
        carrier = HttpCarrier(
            client,
            URL,
            fields={"content": "text", "dlr_level": None, "client_ref": "reference"},
            id_field="data.sid",
        )
        assert carrier.submit(make_segment()) == Accepted("SM9")
        body = json.loads(upstream.requests[0].content)
        assert set(body) == {"to", "from", "text", "dlr", "dlr-url", "reference"}
        assert "authorization" not in upstream.requests[0].headers

    def test_refuses_unknown_fields(self, client: httpx.Client) -> None:
        """A typo in the field map is loud at construction."""
        with pytest.raises(ValueError, match="unknown request fields"):
            HttpCarrier(client, URL, fields={"contnet": "text"})

    @pytest.mark.parametrize(
        ("status", "headers", "error", "retry_after"),
        [
            (400, {}, CarrierRejectedError, None),
            (404, {}, CarrierRejectedError, None),
            (410, {}, CarrierRejectedError, None),
            (422, {}, CarrierRejectedError, None),
            (429, {"retry-after": "5"}, CarrierUnavailableError, 5.0),
            (429, {}, CarrierUnavailableError, None),
            (500, {}, CarrierUnavailableError, None),
            (502, {}, CarrierUnavailableError, None),
            (503, {}, CarrierUnavailableError, None),
        ],
    )
    def test_maps_status_codes(
        self,
        carrier: HttpCarrier,
        upstream: Upstream,
        status: int,
        headers: dict[str, str],
        error: type[CarrierError],
        retry_after: float | None,
    ) -> None:
        """4xx is permanent, 429 and 5xx transient; the upstream's error code is kept."""
        body = {"error": {"code": "upstream_says", "message": "no", "field": "to"}}
        upstream.answer = lambda request: httpx.Response(status, json=body, headers=headers)
        with pytest.raises(error) as caught:
            carrier.submit(make_segment())
        assert type(caught.value) is error
        assert (caught.value.code, caught.value.retry_after) == ("upstream_says", retry_after)
        assert caught.value.carrier == "http"

    @pytest.mark.parametrize(
        ("exc", "error"),
        [
            (httpx.ConnectError, CarrierUnavailableError),
            (httpx.ConnectTimeout, CarrierUnavailableError),
            (httpx.PoolTimeout, CarrierUnavailableError),
            (httpx.ReadTimeout, CarrierUnknownOutcomeError),
            (httpx.ReadError, CarrierUnknownOutcomeError),
            (httpx.RemoteProtocolError, CarrierUnknownOutcomeError),
        ],
    )
    def test_maps_transport_errors(
        self,
        carrier: HttpCarrier,
        upstream: Upstream,
        exc: type[httpx.TransportError],
        error: type[CarrierError],
    ) -> None:
        """No httpx exception escapes the adapter."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise exc("boom", request=request)

        upstream.answer = fail
        with pytest.raises(error):
            carrier.submit(make_segment())

    def test_success_without_id_is_unknown_outcome(
        self, carrier: HttpCarrier, upstream: Upstream
    ) -> None:
        """A 2xx without an id may have been sent: not retried blindly."""
        upstream.answer = lambda request: httpx.Response(202, json={"status": "queued"})
        with pytest.raises(CarrierUnknownOutcomeError):
            carrier.submit(make_segment())


def inbound(
    body: object = None, *, form: dict[str, str] | None = None, query: dict[str, str] | None = None
) -> InboundRequest:
    raw = b"" if body is None else json.dumps(body).encode()
    return InboundRequest("POST", "http://api.test/", query or {}, {}, raw, form or {})


class TestParseReceipts:
    @pytest.mark.parametrize(
        ("request_", "expected"),
        [
            (inbound({"id": "up-1", "level": 2, "status": "delivered", "message_status": "DELIVRD",
                      "error": None, "done_at": "2025-01-01T00:00:00Z"}),
             CarrierReceipt("up-1", SegmentStatus.DELIVERED, done_at="2025-01-01T00:00:00Z")),
            (inbound({"id": "up-2", "status": "undelivered",
                      "error": {"code": "absent", "message": "handset off"}}),
             CarrierReceipt("up-2", SegmentStatus.UNDELIVERED, "absent", "handset off")),
            (inbound({"id": "up-3", "status": "expired"}),
             CarrierReceipt("up-3", SegmentStatus.EXPIRED)),
            (inbound({"id": "up-4", "status": "rejected", "error": "invalid_destination"}),
             CarrierReceipt("up-4", SegmentStatus.REJECTED, "invalid_destination")),
            (inbound({"id": "up-5", "status": "accepted", "level": 1}),
             CarrierReceipt("up-5", SegmentStatus.ACCEPTED)),
            (inbound({"id": "up-6", "status": "failed"}),
             CarrierReceipt("up-6", SegmentStatus.UNDELIVERED)),
            (inbound(query={"id": "up-7", "status": "delivered", "segments_total": "2"}),
             CarrierReceipt("up-7", SegmentStatus.DELIVERED)),
            (inbound(form={"id": "up-8", "status": "UNDELIV", "error_code": "x1",
                           "error_message": "m"}),
             CarrierReceipt("up-8", SegmentStatus.UNDELIVERED, "x1", "m")),
        ],
    )  # fmt: skip
    def test_parses_smsq_receipts(
        self, carrier: HttpCarrier, request_: InboundRequest, expected: CarrierReceipt
    ) -> None:
        """smsq's own receipt (POST JSON or GET query) becomes a carrier receipt."""
        assert carrier.parse_receipts(request_) == [expected]

    @pytest.mark.parametrize(
        "request_",
        [
            inbound(),
            inbound({"status": "delivered"}),
            inbound({"id": "up-1"}),
            inbound({"id": "up-1", "status": "queued"}),
            inbound({"id": {"x": 1}, "status": "delivered"}),
            inbound([]),
            inbound("delivered"),
        ],
    )
    def test_rejects_garbage(self, carrier: HttpCarrier, request_: InboundRequest) -> None:
        """Anything that is not a receipt is a ValidationError."""
        with pytest.raises(ValidationError):
            carrier.parse_receipts(request_)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
receipt_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "status": st.sampled_from(["delivered", "undelivered", "nope"]) | json_values,
        "error": json_values,
        "error_code": json_values,
        "error_message": json_values,
        "done_at": json_values,
    },
)
bodies = (
    st.binary(max_size=64)
    | json_values.map(lambda value: json.dumps(value).encode())
    | receipt_like.map(lambda value: json.dumps(value).encode())
    | st.lists(receipt_like, max_size=3).map(lambda value: json.dumps(value).encode())
)
params = st.dictionaries(
    st.sampled_from(["id", "status", "error", "error_code", "done_at"]), st.text(max_size=12)
)


@given(body=bodies, form=params, query=params)
def test_parser_raises_only_validation_errors(
    body: bytes, form: dict[str, str], query: dict[str, str]
) -> None:
    """Whatever arrives, the parser returns receipts or raises ValidationError, nothing else."""
    unused = httpx.MockTransport(lambda request: httpx.Response(500))
    with httpx.Client(transport=unused) as client:
        request = InboundRequest("POST", "http://api.test/", query, {}, body, form)
        try:
            receipts = HttpCarrier(client, URL).parse_receipts(request)
        except ValidationError:
            return
    assert all(r.carrier_id and isinstance(r.status, SegmentStatus) for r in receipts)
