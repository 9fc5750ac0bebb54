"""Tests for the Kannel adapter (`worker.carriers.kannel.KannelCarrier`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlsplit

import fakeredis
import httpx
import orjson
import pytest

from tests.unit.test_sending import Publisher
from worker.carriers.base import Accepted, CarrierReceipt, InboundRequest, SegmentSubmission
from worker.carriers.kannel import FAILED, SMSC_ACK, KannelCarrier, dlr_url
from worker.contract import POST_RECEIPT, SegmentStatus
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)
from worker.inbound import ReceiptIntake
from worker.sending import Sender
from worker.store import Message, Store, new_message_id

URL = "http://kannel.test:13013"
UDH = bytes.fromhex("050003a70201")


def make_segment(**changes: object) -> SegmentSubmission:
    fields: dict[str, object] = {
        "message_id": "m1",
        "seq": 1,
        "total": 2,
        "to": "+4915112345678",
        "sender": "smsq",
        "udh": UDH,
        "payload": b"",
        "data_coding": 0,
        "text": "Grüße {€}",
        "full_text": "Grüße {€} and more",
        "receipt_url": "http://api.test/carriers/kannel/dlr",
    }
    fields.update(changes)
    return SegmentSubmission(**fields)  # type: ignore[arg-type]


class Smsbox:
    """A MockTransport handler standing in for Kannel's smsbox."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] = lambda request: httpx.Response(
            202, text="0: Accepted for delivery"
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def raw_params(self) -> dict[str, bytes]:
        """The last request's query, each value percent-decoded to bytes."""
        query = urlsplit(str(self.requests[-1].url)).query
        pairs = (item.split("=", 1) for item in query.split("&"))
        return {key: unquote_to_bytes(value) for key, value in pairs}


@pytest.fixture
def smsbox() -> Smsbox:
    return Smsbox()


@pytest.fixture
def carrier(smsbox: Smsbox) -> Iterator[KannelCarrier]:
    with httpx.Client(transport=httpx.MockTransport(smsbox)) as client:
        yield KannelCarrier(client, URL, username="u s", password="p&w", smsc="smsc1")


class TestSubmit:
    def test_sends_one_gsm_segment_with_its_udh(
        self, carrier: KannelCarrier, smsbox: Smsbox
    ) -> None:
        """GSM text goes as UTF-8 with coding 0, the binary UDH as `udh`, to /cgi-bin/sendsms."""
        assert carrier.submit(make_segment()) == Accepted("m1.1", awaiting_ack=True)
        (request,) = smsbox.requests
        assert request.method == "GET"
        assert request.url.path == "/cgi-bin/sendsms"
        params = smsbox.raw_params()
        assert params["text"].decode("utf-8") == "Grüße {€}"
        assert params["charset"] == b"UTF-8"
        assert params["coding"] == b"0"
        assert params["udh"] == UDH
        assert (params["username"], params["password"]) == (b"u s", b"p&w")
        assert (params["from"], params["to"]) == (b"smsq", b"+4915112345678")
        assert params["smsc"] == b"smsc1"

    def test_sends_ucs2_as_raw_utf16(self, carrier: KannelCarrier, smsbox: Smsbox) -> None:
        """UCS-2 segments go as their own UTF-16BE bytes with coding 2: nothing is transcoded."""
        payload = "Привет 😀".encode("utf-16-be")
        carrier.submit(make_segment(data_coding=8, payload=payload, text="Привет 😀"))
        params = smsbox.raw_params()
        assert params["text"] == payload
        assert (params["charset"], params["coding"]) == (b"UTF-16BE", b"2")

    def test_single_segment_has_no_udh(self, carrier: KannelCarrier, smsbox: Smsbox) -> None:
        """A message of one segment goes without a `udh` parameter."""
        carrier.submit(make_segment(udh=b"", total=1))
        assert "udh" not in smsbox.raw_params()

    def test_asks_for_receipts_on_our_url(self, carrier: KannelCarrier, smsbox: Smsbox) -> None:
        """`dlr-mask` and a `dlr-url` carrying our id and Kannel's escape codes."""
        carrier.submit(make_segment(seq=2))
        params = smsbox.raw_params()
        assert params["dlr-mask"] == b"27"  # delivered, failed, SMSC accepted, SMSC rejected
        url = params["dlr-url"].decode()
        assert url.startswith("http://api.test/carriers/kannel/dlr?id=m1.2&")
        for escape in ("type=%d", "ts=%T", "fid=%F", "answer=%A"):
            assert escape in url

    def test_no_receipt_no_dlr_parameters(self, carrier: KannelCarrier, smsbox: Smsbox) -> None:
        """Without a receipt wanted, neither `dlr-mask` nor `dlr-url` is sent, and nothing
        will come back to wait for."""
        assert not carrier.submit(make_segment(want_receipt=False)).awaiting_ack
        assert not {"dlr-mask", "dlr-url"} & set(smsbox.raw_params())

    @pytest.mark.parametrize(
        ("mask", "awaits"),
        [(27, True), (31, True), (24, True), (19, False), (11, False), (3, False)],
    )
    def test_level_one_waits_for_the_smsc_when_the_mask_asks(
        self, smsbox: Smsbox, mask: int, awaits: bool
    ) -> None:
        """Kannel's 202 only queues: with 8 and 16 in the mask the SMSC's answer is awaited
        (a receipt); without them the 202 is all there is."""
        with httpx.Client(transport=httpx.MockTransport(smsbox)) as client:
            carrier = KannelCarrier(client, URL, username="u", password="p", dlr_mask=mask)
            assert carrier.acknowledges_by_receipt is awaits
            assert carrier.submit(make_segment()).awaiting_ack is awaits
        assert smsbox.raw_params()["dlr-mask"] == str(mask).encode()

    @pytest.mark.parametrize(
        ("url", "path"),
        [
            ("http://k.test:13013", "/cgi-bin/sendsms"),
            ("http://k.test:13013/", "/cgi-bin/sendsms"),
            ("http://k.test/custom/send", "/custom/send"),
        ],
    )
    def test_bare_url_means_sendsms(self, smsbox: Smsbox, url: str, path: str) -> None:
        """A base URL gets Kannel's default path; a URL with a path is used as given."""
        with httpx.Client(transport=httpx.MockTransport(smsbox)) as client:
            KannelCarrier(client, url, username="u", password="p").submit(make_segment())
        assert smsbox.requests[0].url.path == path

    @pytest.mark.parametrize(
        ("status", "body", "error"),
        [
            (202, "0: Accepted for delivery", None),
            (202, "3: Queued for later delivery", None),
            (400, "Missing receiver number", CarrierRejectedError),
            (403, "Authorization failed for sendsms", CarrierRejectedError),
            (408, "", CarrierUnavailableError),
            (429, "", CarrierUnavailableError),
            (500, "", CarrierUnavailableError),
            (503, "Temporal failure, try again later.", CarrierUnavailableError),
            (302, "", CarrierUnavailableError),
        ],
    )
    def test_status_codes(
        self,
        carrier: KannelCarrier,
        smsbox: Smsbox,
        status: int,
        body: str,
        error: type[CarrierError] | None,
    ) -> None:
        """2xx accepts; 5xx, 408, 429 and 3xx are transient; other 4xx are permanent."""
        smsbox.answer = lambda request: httpx.Response(status, text=body)
        if error is None:
            assert carrier.submit(make_segment()).carrier_id == "m1.1"
            return
        with pytest.raises(error) as caught:
            carrier.submit(make_segment())
        assert caught.value.status_code == status
        assert caught.value.code == f"kannel_{status}"
        if body:
            assert caught.value.message == body
        if isinstance(caught.value, CarrierRejectedError):  # 403: bad credentials
            assert caught.value.carrier_side is (status == 403)

    def test_retry_after_is_kept(self, carrier: KannelCarrier, smsbox: Smsbox) -> None:
        """A 503 with Retry-After carries the wait."""
        smsbox.answer = lambda request: httpx.Response(503, headers={"retry-after": "7"})
        with pytest.raises(CarrierUnavailableError) as caught:
            carrier.submit(make_segment())
        assert caught.value.retry_after == 7

    @pytest.mark.parametrize(
        ("exc", "error"),
        [
            (httpx.ConnectError("refused"), CarrierUnavailableError),
            (httpx.ConnectTimeout("slow"), CarrierUnavailableError),
            (httpx.ReadTimeout("no answer"), CarrierUnknownOutcomeError),
            (httpx.RemoteProtocolError("dropped"), CarrierUnknownOutcomeError),
        ],
    )
    def test_transport_errors(
        self, carrier: KannelCarrier, smsbox: Smsbox, exc: Exception, error: type[CarrierError]
    ) -> None:
        """Nothing sent is transient; a request that left without an answer is unknown."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise exc

        smsbox.answer = fail
        with pytest.raises(error):
            carrier.submit(make_segment())

    def test_unsupported_coding_is_refused(self, carrier: KannelCarrier) -> None:
        """8-bit data is not something smsq sends; it is refused before any request."""
        with pytest.raises(CarrierRejectedError, match="data_coding"):
            carrier.submit(make_segment(data_coding=4))


def callback(url: str) -> InboundRequest:
    """The GET Kannel makes to a filled-in dlr-url."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}
    return InboundRequest(method="GET", url=url, query=query, headers={})


# Callbacks as Kannel makes them: `%d` and `%A` for each kind of SMSC answer (1.4 and 1.6).
ANSWER_DELIVRD = "id:7 sub:001 dlvrd:001 submit date:2511251946 done date:2511251946 stat:DELIVRD err:000 text:Your code"  # noqa: E501
KANNEL_DLRS = [
    # (%d, %A, state, error code)
    ("1", ANSWER_DELIVRD, SegmentStatus.DELIVERED, None),
    ("1", "", SegmentStatus.DELIVERED, None),
    ("2", "id:7 stat:UNDELIV err:034", SegmentStatus.UNDELIVERED, "034"),
    ("2", "id:7 stat:EXPIRED err:000", SegmentStatus.EXPIRED, None),  # 1.4, text receipt
    ("34", "id:7 stat:EXPIRED err:000", SegmentStatus.EXPIRED, None),  # 32|2: 1.6, expired
    ("34", "", SegmentStatus.EXPIRED, None),  # 1.6's DLR_EXPIRED without text
    ("2", "id:7 stat:REJECTD err:011", SegmentStatus.REJECTED, "011"),
    ("2", "id:7 stat:DELETED err:000", SegmentStatus.UNDELIVERED, "kannel_dlr_2"),
    ("2", "id:7 stat:UNKNOWN err:000", SegmentStatus.UNDELIVERED, "kannel_dlr_2"),
    ("66", "id:7 stat:UNKNOWN err:000", SegmentStatus.UNDELIVERED, "kannel_dlr_66"),  # 64|2
    ("2", "", SegmentStatus.UNDELIVERED, "kannel_dlr_2"),
    ("4", "id:7 stat:ACCEPTD err:000", SegmentStatus.ACCEPTED, None),  # buffered
    ("4", "id:7 stat:ENROUTE err:000", SegmentStatus.ACCEPTED, None),
    ("8", "ACK/", SegmentStatus.ACCEPTED, None),  # the SMSC's submit_sm_resp, OK
    ("16", "NACK/0x00000045/Submit failed", SegmentStatus.REJECTED, "0x00000045"),
    ("16", "NACK/", SegmentStatus.REJECTED, "kannel_dlr_16"),
    ("32", "id:7 stat:ENROUTE err:000", SegmentStatus.ACCEPTED, None),  # intermediate
]


class TestParseReceipts:
    @pytest.mark.parametrize(("kind", "answer", "status", "error_code"), KANNEL_DLRS)
    def test_dlr_types(
        self,
        carrier: KannelCarrier,
        kind: str,
        answer: str,
        status: SegmentStatus,
        error_code: str | None,
    ) -> None:
        """`%d` is a bitmask giving the state; a failure's `stat:` and `err:` refine it. A
        rejection in a receipt (not the SMSC's NACK) comes after the acceptance it implies."""
        url = dlr_url("http://api.test/carriers/kannel/dlr", "m1.2")
        filled = url.replace("%d", kind).replace("%T", "1764100000").replace("%A", answer)
        *implied, receipt = carrier.parse_receipts(
            callback(filled.replace("%i", "").replace("%F", ""))
        )
        took_it = status is SegmentStatus.REJECTED and kind != "16"
        assert implied == (
            [CarrierReceipt("m1.2", SegmentStatus.ACCEPTED, done_at=receipt.done_at)]
            if took_it
            else []
        )
        assert receipt.carrier_id == "m1.2"
        assert receipt.status is status
        assert receipt.error_code == error_code
        assert receipt.done_at == "2025-11-25T19:46:40+00:00"
        failed = status in (SegmentStatus.UNDELIVERED, SegmentStatus.REJECTED)
        assert receipt.error_message == (answer if failed and answer else None)

    @pytest.mark.parametrize(
        ("kind", "status"),
        [
            ("24", SegmentStatus.REJECTED),  # 16 over 8
            ("18", SegmentStatus.REJECTED),  # 16 over 2
            ("3", SegmentStatus.UNDELIVERED),  # 2 over 1
            ("9", SegmentStatus.DELIVERED),  # 1 over 8
            ("12", SegmentStatus.ACCEPTED),
            ("127", SegmentStatus.REJECTED),
        ],
    )
    def test_several_bits_the_strongest_wins(
        self, carrier: KannelCarrier, kind: str, status: SegmentStatus
    ) -> None:
        """A refusal beats a failure, which beats delivery, which beats an acceptance."""
        (receipt,) = carrier.parse_receipts(callback(f"http://api.test/dlr?id=m1.1&type={kind}"))
        assert receipt.status is status

    def test_minimal_receipt(self, carrier: KannelCarrier) -> None:
        """Only `id` and `type` are required."""
        receipts = carrier.parse_receipts(callback("http://api.test/dlr?id=m9.1&type=1"))
        assert receipts == [CarrierReceipt("m9.1", SegmentStatus.DELIVERED)]

    @pytest.mark.parametrize(
        "query",
        [
            "type=1", "id=m1.1", "id=&type=1", "id=m1.1&type=%25d", "id=m1.1&type=0",
            "id=m1.1&type=64", "id=m1.1&type=128", "id=m1.1&type=-2", "id=m1.1&type=%C2%B2",
            "id=m1.1&type=0x10", "id=m1.1&type=00002",
        ],
    )  # fmt: skip
    def test_garbage_is_invalid(self, carrier: KannelCarrier, query: str) -> None:
        """A missing id or type, a type with no known bit, or an unfilled escape is a
        ValidationError."""
        with pytest.raises(ValidationError):
            carrier.parse_receipts(callback(f"http://api.test/dlr?{query}"))


class TestReceiptOrder:
    """smsbox fetches its dlr-urls concurrently, so a receipt may overtake the SMSC's ack
    (the SMSC sends its receipt right after its submit_sm_resp): the client's receipts are the
    same in either order."""

    def callbacks(self, smsbox: Smsbox, *dlrs: tuple[int, str]) -> list[InboundRequest]:
        """Kannel's GETs of the dlr-url it was given, `%d` and `%A` filled in."""
        (given,) = parse_qs(urlsplit(str(smsbox.requests[-1].url)).query)["dlr-url"]
        escapes = {"%T": "1764100000", "%i": "smsc1", "%F": "7"}
        for code, value in escapes.items():
            given = given.replace(code, value)
        return [
            callback(given.replace("%d", str(kind)).replace("%A", quote(answer, safe="")))
            for kind, answer in dlrs
        ]

    @pytest.mark.parametrize(
        ("answer", "receipts"),
        [
            ("id:7 stat:REJECTD err:011", [("accepted", None), ("rejected", "011")]),
            ("id:7 stat:UNDELIV err:034", [("accepted", None), ("undelivered", "034")]),
        ],
        ids=["rejectd", "undeliv"],
    )
    @pytest.mark.parametrize("receipt_first", [False, True], ids=["ack-first", "receipt-first"])
    def test_a_receipt_before_the_ack_still_means_the_smsc_took_it(
        self,
        carrier: KannelCarrier,
        smsbox: Smsbox,
        answer: str,
        receipts: list[tuple[str, str | None]],
        receipt_first: bool,
    ) -> None:
        """Level 1 is the SMSC's acceptance and level 2 the failure, whichever came first: a
        REJECTD receipt is a rejection after the SMSC took the message, never its refusal."""
        store = Store(fakeredis.FakeRedis(decode_responses=True))
        message = Message(
            id=new_message_id(), to="+4915112345678", sender="smsq", content="hi", segments=1,
            dlr=True, dlr_level=3, dlr_url="https://client.test/r",
        )  # fmt: skip
        store.create(message)
        publisher = Publisher()
        Sender(store, carrier, publisher, "http://api.test").send(message.id)
        ack, failure = self.callbacks(smsbox, (SMSC_ACK, "ACK/"), (FAILED, answer))
        intake = ReceiptIntake(store, publisher)
        for request in [failure, ack] if receipt_first else [ack, failure]:
            intake.handle(carrier, request)

        opened = [args for task, args, _ in publisher.now if task == POST_RECEIPT]
        assert opened == [[message.id, 1], [message.id, 2]]
        fields = store.fields(message.id)
        snapshots = [orjson.loads(fields[f"rcpt:{level}:snap"]) for level in (1, 2)]
        assert [(s["status"], (s.get("error") or {}).get("code")) for s in snapshots] == receipts
        assert fields["status"] == receipts[-1][0]
