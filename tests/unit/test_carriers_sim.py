"""Tests for the carrier simulator adapter (`worker.carriers.sim.SimCarrier`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.carriers.base import Accepted, CarrierReceipt, InboundRequest, SegmentSubmission
from worker.carriers.sim import SimCarrier
from worker.contract import SegmentStatus
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)

Handler = Callable[[httpx.Request], httpx.Response]


def make_segment(**changes: object) -> SegmentSubmission:
    fields: dict[str, object] = {
        "message_id": "m1",
        "seq": 2,
        "total": 2,
        "to": "+4915112345678",
        "sender": "smsq",
        "udh": bytes.fromhex("050003a70202"),
        "payload": "hé".encode("utf-16-be"),
        "data_coding": 8,
        "text": "hé",
        "full_text": "…hé",
        "receipt_url": "http://api.test/carriers/sim/dlr",
    }
    fields.update(changes)
    return SegmentSubmission(**fields)  # type: ignore[arg-type]


class Recorder:
    """A MockTransport handler that records requests and answers as told."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Handler = lambda request: httpx.Response(200, json={"carrier_id": "sim-1"})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def carrier(recorder: Recorder) -> Iterator[SimCarrier]:
    with httpx.Client(transport=httpx.MockTransport(recorder)) as client:
        yield SimCarrier(client, "http://sim.test:8025/")


class TestSubmit:
    def test_posts_the_segment_as_hex(self, carrier: SimCarrier, recorder: Recorder) -> None:
        """The request is one JSON POST to /submit with UDH and payload in hex."""
        assert carrier.submit(make_segment()) == Accepted("sim-1")
        (request,) = recorder.requests
        assert request.method == "POST"
        assert str(request.url) == "http://sim.test:8025/submit"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {
            "to": "+4915112345678",
            "from": "smsq",
            "udh": "050003a70202",
            "payload": "006800e9",
            "data_coding": 8,
            "client_ref": "m1:2",
            "receipt_url": "http://api.test/carriers/sim/dlr",
            "text": "hé",
        }

    def test_sends_no_receipt_url_when_none_is_wanted(
        self, carrier: SimCarrier, recorder: Recorder
    ) -> None:
        """`want_receipt=False` sends `receipt_url: null`; an empty UDH is an empty string."""
        carrier.submit(make_segment(want_receipt=False, udh=b""))
        body = json.loads(recorder.requests[0].content)
        assert body["receipt_url"] is None
        assert body["udh"] == ""

    def test_segments_itself(self, carrier: SimCarrier) -> None:
        """The simulator takes segments, not whole texts."""
        assert carrier.submits_whole_text is False
        assert carrier.name == "sim"

    @pytest.mark.parametrize(
        ("status", "headers", "body", "error", "code", "retry_after"),
        [
            (400, {}, {"error": {"code": "bad_payload"}}, CarrierRejectedError,
             "bad_payload", None),
            (400, {}, {"error": {"code": "invalid_destination"}}, CarrierRejectedError,
             "invalid_destination", None),
            (404, {}, {}, CarrierRejectedError, "http_404", None),
            (410, {}, {}, CarrierRejectedError, "http_410", None),
            (422, {}, {}, CarrierRejectedError, "http_422", None),
            (429, {"retry-after": "2"}, {"error": {"code": "throttled"}}, CarrierUnavailableError,
             "throttled", 2.0),
            (429, {}, {}, CarrierUnavailableError, "http_429", None),
            (500, {}, {}, CarrierUnavailableError, "http_500", None),
            (502, {}, {}, CarrierUnavailableError, "http_502", None),
            (503, {}, {"error": {"code": "unavailable"}}, CarrierUnavailableError,
             "unavailable", None),
        ],
    )  # fmt: skip
    def test_maps_status_codes(
        self,
        carrier: SimCarrier,
        recorder: Recorder,
        status: int,
        headers: dict[str, str],
        body: dict[str, object],
        error: type[CarrierError],
        code: str,
        retry_after: float | None,
    ) -> None:
        """Each answer becomes the error the sending logic expects, carrying code and delay."""
        recorder.answer = lambda request: httpx.Response(status, json=body, headers=headers)
        with pytest.raises(error) as caught:
            carrier.submit(make_segment())
        assert type(caught.value) is error
        assert (caught.value.code, caught.value.retry_after) == (code, retry_after)
        assert (caught.value.carrier, caught.value.status_code) == ("sim", status)

    @pytest.mark.parametrize(
        ("exc", "error"),
        [
            (httpx.ConnectError, CarrierUnavailableError),
            (httpx.ConnectTimeout, CarrierUnavailableError),
            (httpx.PoolTimeout, CarrierUnavailableError),
            (httpx.WriteTimeout, CarrierUnavailableError),
            (httpx.ReadTimeout, CarrierUnknownOutcomeError),
            (httpx.ReadError, CarrierUnknownOutcomeError),
            (httpx.RemoteProtocolError, CarrierUnknownOutcomeError),
        ],
    )
    def test_maps_transport_errors(
        self,
        carrier: SimCarrier,
        recorder: Recorder,
        exc: type[httpx.TransportError],
        error: type[CarrierError],
    ) -> None:
        """No httpx exception escapes: each becomes retryable or unknown outcome."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise exc("boom", request=request)

        recorder.answer = fail
        with pytest.raises(error) as caught:
            carrier.submit(make_segment())
        assert type(caught.value) is error
        assert isinstance(caught.value.__cause__, exc)

    @pytest.mark.parametrize(
        "content", [b"", b"ok", b"{}", b'{"carrier_id": ""}', b'{"id": "sim-1"}', b'["sim-1"]']
    )
    def test_malformed_success_is_unknown_outcome(
        self, carrier: SimCarrier, recorder: Recorder, content: bytes
    ) -> None:
        """A 2xx without a carrier id is not retried blindly."""
        recorder.answer = lambda request: httpx.Response(200, content=content)
        with pytest.raises(CarrierUnknownOutcomeError):
            carrier.submit(make_segment())


def inbound(
    body: bytes = b"", *, form: dict[str, str] | None = None, query: dict[str, str] | None = None
) -> InboundRequest:
    return InboundRequest(
        method="POST" if body or form else "GET",
        url="http://api.test/carriers/sim/dlr?" + urlencode(query or {}),
        query=query or {},
        headers={"content-type": "application/json"} if body else {},
        body=body,
        form=form or {},
    )


DONE_AT = "2025-01-01T00:00:00.000+00:00"


def dlr(**fields: object) -> bytes:
    return json.dumps(fields).encode()


class TestParseReceipts:
    @pytest.mark.parametrize(
        ("request_", "expected"),
        [
            (inbound(dlr(carrier_id="sim-1", status="DELIVRD", err="000", done_at=DONE_AT)),
             CarrierReceipt("sim-1", SegmentStatus.DELIVERED, done_at=DONE_AT)),
            (inbound(dlr(carrier_id="sim-2", status="UNDELIV", err="001")),
             CarrierReceipt("sim-2", SegmentStatus.UNDELIVERED, error_code="001")),
            (inbound(dlr(carrier_id="sim-3", status="expired")),
             CarrierReceipt("sim-3", SegmentStatus.EXPIRED)),
            (inbound(dlr(carrier_id="sim-4", status="REJECTD", err=88)),
             CarrierReceipt("sim-4", SegmentStatus.REJECTED, error_code="88")),
            (inbound(dlr(carrier_id="sim-5", status="ACCEPTD")),
             CarrierReceipt("sim-5", SegmentStatus.ACCEPTED)),
            (inbound(dlr(carrier_id="sim-6", status="ENROUTE")),
             CarrierReceipt("sim-6", SegmentStatus.ACCEPTED)),
            (inbound(form={"carrier_id": "sim-7", "status": "DELIVRD", "err": "000"}),
             CarrierReceipt("sim-7", SegmentStatus.DELIVERED)),
            (inbound(query={"carrier_id": "sim-8", "status": "UNDELIV", "err": "005"}),
             CarrierReceipt("sim-8", SegmentStatus.UNDELIVERED, error_code="005")),
        ],
    )  # fmt: skip
    def test_parses_json_form_and_query(
        self, carrier: SimCarrier, request_: InboundRequest, expected: CarrierReceipt
    ) -> None:
        """The simulator's receipt is read from a JSON body, a form or query parameters."""
        assert carrier.parse_receipts(request_) == [expected]

    def test_prefers_the_form_of_a_form_post(self, carrier: SimCarrier) -> None:
        """A form-encoded POST carries its raw body too; the parsed form is what counts."""
        form = {"carrier_id": "sim-9", "status": "DELIVRD"}
        request = InboundRequest("POST", "http://api.test/", {}, {}, urlencode(form).encode(), form)
        assert carrier.parse_receipts(request) == [CarrierReceipt("sim-9", SegmentStatus.DELIVERED)]

    def test_parses_a_list(self, carrier: SimCarrier) -> None:
        """A JSON list carries several receipts."""
        body = json.dumps(
            [{"carrier_id": "a", "status": "DELIVRD"}, {"carrier_id": "b", "status": "UNDELIV"}]
        ).encode()
        assert [r.carrier_id for r in carrier.parse_receipts(inbound(body))] == ["a", "b"]

    @pytest.mark.parametrize(
        "request_",
        [
            inbound(),
            inbound(b"{not json"),
            inbound(b"\xff\xfe"),
            inbound(b"[]"),
            inbound(b"[1]"),
            inbound(b'"DELIVRD"'),
            inbound(dlr(status="DELIVRD")),
            inbound(dlr(carrier_id="", status="DELIVRD")),
            inbound(dlr(carrier_id=["x"], status="DELIVRD")),
            inbound(dlr(carrier_id="x" * 500, status="DELIVRD")),
            inbound(dlr(carrier_id="sim-1")),
            inbound(dlr(carrier_id="sim-1", status="LOST")),
            inbound(dlr(carrier_id="sim-1", status=None)),
            inbound(query={"carrier_id": "sim-1"}),
        ],
    )
    def test_rejects_garbage(self, carrier: SimCarrier, request_: InboundRequest) -> None:
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
        "carrier_id": json_values,
        "status": st.sampled_from(["DELIVRD", "UNDELIV", "bogus", ""]) | json_values,
        "err": json_values,
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
    st.sampled_from(["carrier_id", "status", "err", "done_at", "x"]), st.text(max_size=12)
)


@given(body=bodies, form=params, query=params)
def test_parser_raises_only_validation_errors(
    body: bytes, form: dict[str, str], query: dict[str, str]
) -> None:
    """Whatever arrives, the parser returns receipts or raises ValidationError, nothing else."""
    unused = httpx.MockTransport(lambda request: httpx.Response(500))
    with httpx.Client(transport=unused) as client:
        carrier = SimCarrier(client, "http://sim.test")
        request = InboundRequest("POST", "http://api.test/", query, {}, body, form)
        try:
            receipts = carrier.parse_receipts(request)
        except ValidationError:
            return
    assert all(isinstance(r.carrier_id, str) and r.carrier_id for r in receipts)
    assert all(isinstance(r.status, SegmentStatus) for r in receipts)
