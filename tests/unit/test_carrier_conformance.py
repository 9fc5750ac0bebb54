"""The carrier conformance suite: every registered adapter, given its test data, passes the same
checks: submit, what went wrong, receipts, receipt authentication, health probe, configuration.

An adapter's test data is a `CarrierCase`: its `[carriers.NAME]` table, a stand-in for its
carrier that answers as an `Outcome` says, and the receipt requests its carrier makes. Adding an
adapter adds its case to `CASES`. `Conformance` holds the checks and runs over a `case` fixture:
`TestRegisteredAdapters` gives it every registered adapter, and a test module that brings an
adapter of its own derives from it too (tests/unit/test_carriers_plugin.py).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import replace
from enum import Enum
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import pydantic
import pytest

from worker.carriers.adapters import adapter_for, type_names
from worker.carriers.base import (
    AdapterContext,
    CarrierAdapter,
    InboundRequest,
    ReceiptAuth,
    SegmentSubmission,
)
from worker.carriers.config import CarrierConfig, CarriersConfig, RouteConfig
from worker.carriers.options import AdapterOptions
from worker.carriers.routing import is_carrier_side
from worker.carriers.twilio import signature as twilio_signature
from worker.contract import SegmentStatus
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)
from worker.receipts.tokens import BAD_SIGNATURE, BAD_TOKEN, CallbackAuth, segment_receipt_url
from worker.settings import Settings
from worker.webhooks import generate_secret, signature_headers

NAME = "c1"  # the configured carrier's name in every check
PUBLIC = "http://api.test"
SERVER_KEY = "conformance-server-key"
RECEIPT_SECRET = generate_secret()
TO = "+4915112345678"


class Outcome(Enum):
    """How a stand-in carrier answers every request."""

    ACCEPTED = "accepted"  # takes the submission (and is up, for a probe)
    DOWN = "down"  # a server error
    THROTTLED = "throttled"  # too many requests, come back in 7 s
    UNREACHABLE = "unreachable"  # no connection
    CONNECT_TIMEOUT = "connect_timeout"  # no connection in time: nothing was sent
    NO_ANSWER = "no_answer"  # the request left, no answer came
    BAD_NUMBER = "bad_number"  # refuses the message
    BAD_CREDENTIALS = "bad_credentials"  # refuses the account


def settings() -> Settings:
    return Settings(public_url=PUBLIC, secret_key=SERVER_KEY)


def receipt_url() -> str:
    """The tokenised receipt URL of segment `m1:1`, as the Sender makes it."""
    return segment_receipt_url(f"{PUBLIC}/carriers/{NAME}/dlr", "m1", 1, settings())


def segment() -> SegmentSubmission:
    return SegmentSubmission(
        message_id="m1", seq=1, total=1, to=TO, sender="smsq", udh=b"", payload=b"",
        data_coding=0, text="Your code is 123456", full_text="Your code is 123456",
        receipt_url=receipt_url(),
    )  # fmt: skip


class CarrierCase(ABC):
    """One adapter's test data, with a stand-in for its carrier."""

    table: ClassVar[dict[str, Any]]  # a `[carriers.NAME]` table, `type` included
    # Outcomes the stand-in cannot produce at submission (an adapter that hands segments to a
    # process of its own learns the carrier's answer later, as a receipt): those checks skip.
    unstaged: ClassVar[frozenset[Outcome]] = frozenset()

    @abstractmethod
    def context(self, outcome: Outcome) -> AdapterContext:
        """A context whose carrier answers every request as `outcome` says."""

    @abstractmethod
    def sms_sent(self) -> int:
        """How many submissions (to `TO`) the stand-in saw."""

    @abstractmethod
    def receipt_url_given(self) -> str | None:
        """Where the last submission told the carrier to send its receipts; None when its
        receipts do not come over HTTP (then the receipt checks skip)."""

    @abstractmethod
    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        """The request the carrier makes to `url` (as it was given) reporting `carrier_id`
        delivered."""

    @abstractmethod
    def garbage(self, url: str) -> list[InboundRequest]:
        """Requests to `url` that carry no valid receipt."""

    @abstractmethod
    def close(self) -> None:
        """Release what the stand-in holds."""


def request_to(
    url: str, *, method: str = "POST", body: bytes = b"", headers: dict[str, str] | None = None
) -> InboundRequest:
    """An inbound request as the API receives it (form bodies parsed)."""
    headers = headers or {}
    form = {}
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    return InboundRequest(method, url, query, headers, body, form)


def json_to(url: str, item: object) -> InboundRequest:
    return request_to(
        url, body=json.dumps(item).encode(), headers={"content-type": "application/json"}
    )


def form_to(
    url: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> InboundRequest:
    content_type = {"content-type": "application/x-www-form-urlencoded"}
    return request_to(
        url, body=urlencode(form).encode(), headers={**content_type, **(headers or {})}
    )


def without_token(request: InboundRequest) -> InboundRequest:
    """The request with the segment's `ref` and `token` taken out of its URL."""
    query = {k: v for k, v in request.query.items() if k not in ("ref", "token")}
    parts = urlsplit(request.url)
    url = urlunsplit(parts._replace(query=urlencode(query)))
    return replace(request, url=url, query=query)


def signed_by(secret: str, request: InboundRequest) -> InboundRequest:
    """The request signed per Standard Webhooks with `secret`."""
    payload = request.body if request.method != "GET" else urlsplit(request.url).query.encode()
    headers = signature_headers([secret], "evt-1", int(time.time()), payload)
    return replace(request, headers={**request.headers, **headers})


def altered(request: InboundRequest) -> InboundRequest:
    """The request with its content changed after it was signed."""
    form = {key: value + "x" for key, value in request.form.items()}
    body = urlencode(form).encode() if form else request.body.replace(b"}", b', "x": 1}', 1)
    return replace(request, body=body, form=form)


class HttpStandIn(CarrierCase):
    """A carrier over HTTP: a MockTransport answers as the outcome says, in the carrier's
    own shapes (`accept`, `refuse`)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._clients: list[httpx.Client] = []

    @abstractmethod
    def accept(self, request: httpx.Request) -> httpx.Response:
        """The carrier's answer taking a submission (a probe gets the same)."""

    def refuse(self, outcome: Outcome) -> httpx.Response:
        """The carrier's answer refusing the message (BAD_NUMBER) or the account."""
        status = 400 if outcome is Outcome.BAD_NUMBER else 401
        return httpx.Response(status, json={"error": {"code": outcome.value, "message": "no"}})

    def answer(self, outcome: Outcome, request: httpx.Request) -> httpx.Response:
        if outcome is Outcome.ACCEPTED:
            return self.accept(request)
        if outcome is Outcome.DOWN:
            return httpx.Response(503, text="down")
        if outcome is Outcome.THROTTLED:
            return httpx.Response(429, headers={"retry-after": "7"}, text="slow down")
        if outcome is Outcome.UNREACHABLE:
            raise httpx.ConnectError("refused", request=request)
        if outcome is Outcome.CONNECT_TIMEOUT:
            raise httpx.ConnectTimeout("slow", request=request)
        if outcome is Outcome.NO_ANSWER:
            raise httpx.ReadTimeout("no answer", request=request)
        return self.refuse(outcome)

    def context(self, outcome: Outcome) -> AdapterContext:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return self.answer(outcome, request)

        client = httpx.Client(transport=httpx.MockTransport(handle))
        self._clients.append(client)
        return AdapterContext(client=client, settings=settings())

    def sms_sent(self) -> int:
        number = TO.lstrip("+")
        return sum(number in str(r.url) or number.encode() in r.content for r in self.requests)

    def last_submission(self) -> httpx.Request:
        return next(
            r for r in reversed(self.requests) if TO.lstrip("+") in str(r.url) + str(r.content)
        )

    def close(self) -> None:
        for client in self._clients:
            client.close()


class SimCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "sim", "url": "http://sim.test:8025", "receipt_secret": RECEIPT_SECRET
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"carrier_id": "sim-1"})

    def receipt_url_given(self) -> str:
        return str(json.loads(self.last_submission().content)["receipt_url"])

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        return json_to(url, {"carrier_id": carrier_id, "status": "DELIVRD", "err": "000"})

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            json_to(url, {}),
            json_to(url, {"carrier_id": "sim-1", "status": "LOST"}),
            request_to(url, body=b"{not json"),
        ]


class HttpCarrierCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "http", "url": "http://upstream.test", "password": "sk_1",
        "receipt_secret": RECEIPT_SECRET,
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, json={"id": "up-1", "status": "queued"})

    def receipt_url_given(self) -> str:
        return str(json.loads(self.last_submission().content)["dlr-url"])

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        return json_to(url, {"id": carrier_id, "status": "delivered", "level": 2})

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            json_to(url, {"id": "up-1"}),
            json_to(url, {"id": "up-1", "status": "queued"}),
            json_to(url, []),
        ]


class KannelCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "kannel", "url": "http://kannel.test:13013", "username": "smsq", "password": "pw"
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, text="0: Accepted for delivery")

    def refuse(self, outcome: Outcome) -> httpx.Response:
        if outcome is Outcome.BAD_NUMBER:
            return httpx.Response(400, text="Missing receiver number")
        return httpx.Response(403, text="Authorization failed for sendsms")

    def receipt_url_given(self) -> str:
        return dict(parse_qsl(self.last_submission().url.query.decode()))["dlr-url"]

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        # Kannel fills in the escape codes of the `dlr-url` and GETs it.
        answer = quote("id:f1 sub:001 dlvrd:001 stat:DELIVRD err:000", safe="")
        escapes = {"%d": "1", "%T": "1700000000", "%i": "fake", "%F": "f1", "%A": answer}
        for code, value in escapes.items():
            url = url.replace(code, value)
        return request_to(url, method="GET")

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            request_to(url.replace("type=%d", "type=abc"), method="GET"),
            request_to(url.replace("type=%d", "type=0"), method="GET"),
            request_to(f"{PUBLIC}/carriers/{NAME}/dlr?type=1", method="GET"),
        ]


class TwilioCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "twilio", "url": "https://api.twilio.test", "username": "AC1", "password": "tok"
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"sid": "SM1", "status": "queued"})

    def refuse(self, outcome: Outcome) -> httpx.Response:
        if outcome is Outcome.BAD_NUMBER:
            return httpx.Response(400, json={"code": 21211, "message": "Invalid 'To'"})
        return httpx.Response(401, json={"code": 20003, "message": "Authenticate"})

    def receipt_url_given(self) -> str:
        return dict(parse_qsl(self.last_submission().content.decode()))["StatusCallback"]

    def signed(self, url: str, form: dict[str, str]) -> InboundRequest:
        return form_to(url, form, {"x-twilio-signature": twilio_signature(url, form, "tok")})

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        return self.signed(url, {"MessageSid": carrier_id, "MessageStatus": "delivered"})

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            self.signed(url, {"MessageSid": "SM1", "MessageStatus": "lost"}),
            self.signed(url, {"MessageStatus": "delivered"}),
            form_to(url, {"MessageSid": "SM1", "MessageStatus": "delivered"}),  # unsigned
        ]


# Every registered adapter's test data, by type name.
CASES: dict[str, type[CarrierCase]] = {
    "sim": SimCase,
    "http": HttpCarrierCase,
    "kannel": KannelCase,
    "twilio": TwilioCase,
}


def config_of(case: CarrierCase) -> CarrierConfig:
    return CarrierConfig(**case.table)


def staged(case: CarrierCase, outcome: Outcome) -> AdapterContext:
    if outcome in case.unstaged:
        pytest.skip(f"the stand-in cannot answer {outcome.value!r}")
    return case.context(outcome)


def built(case: CarrierCase, outcome: Outcome = Outcome.ACCEPTED) -> CarrierAdapter[Any]:
    """The case's adapter, built as the registry builds it, talking to the stand-in."""
    config = config_of(case)
    return config.adapter.from_config(NAME, config.options, staged(case, outcome))


def callback_auth(case: CarrierCase) -> CallbackAuth:
    carriers = CarriersConfig(
        carriers={NAME: config_of(case)}, routes=(RouteConfig(carriers=(NAME,)),)
    )
    return CallbackAuth(carriers, SERVER_KEY, PUBLIC)


def submitted(case: CarrierCase) -> tuple[str, str]:
    """Submit `segment()`; the carrier id, and the receipt URL the carrier was given."""
    carrier_id = built(case).submit(segment()).carrier_id
    given = case.receipt_url_given()
    if given is None:
        pytest.skip("its receipts do not come over HTTP")
    return carrier_id, given


class Conformance:
    """What every carrier adapter does, checked against its `case`."""

    def test_is_registered_with_its_options_model(self, case: CarrierCase) -> None:
        """The table's `type` names the class; its keys are the class's options model."""
        config = config_of(case)
        assert adapter_for(config.adapter.type_name) is config.adapter
        assert issubclass(config.adapter.Options, AdapterOptions)
        assert isinstance(config.options, config.adapter.Options)
        assert Settings(carrier=config.type).carrier == config.type  # a SMSQ_CARRIER choice

    def test_declares_its_capabilities(self, case: CarrierCase) -> None:
        """Every capability is declared, with a plain value."""
        carrier = built(case)
        assert carrier.name == NAME
        flags = (
            carrier.submits_whole_text,
            carrier.honours_client_ref,
            carrier.acknowledges_by_receipt,
            carrier.lists_receipts,
        )
        assert all(isinstance(flag, bool) for flag in flags)
        assert isinstance(carrier.receipt_auth, ReceiptAuth)

    def test_a_submission_is_accepted(self, case: CarrierCase) -> None:
        """The carrier's acceptance names its id; it waits for an SMSC ack only if declared."""
        carrier = built(case)
        accepted = carrier.submit(segment())
        assert accepted.carrier_id
        assert accepted.awaiting_ack is carrier.acknowledges_by_receipt
        assert case.sms_sent() == 1

    def test_hands_the_carrier_the_segment_s_receipt_url(self, case: CarrierCase) -> None:
        """The tokenised receipt URL reaches the carrier (with what else the carrier needs)."""
        _, given = submitted(case)
        assert given.startswith(receipt_url())

    @pytest.mark.parametrize(
        ("outcome", "error", "retry_after"),
        [
            (Outcome.DOWN, CarrierUnavailableError, None),
            (Outcome.THROTTLED, CarrierUnavailableError, 7.0),
            (Outcome.UNREACHABLE, CarrierUnavailableError, None),
            (Outcome.CONNECT_TIMEOUT, CarrierUnavailableError, None),
            (Outcome.NO_ANSWER, CarrierUnknownOutcomeError, None),
            (Outcome.BAD_NUMBER, CarrierRejectedError, None),
            (Outcome.BAD_CREDENTIALS, CarrierRejectedError, None),
        ],
    )
    def test_says_what_went_wrong(
        self,
        case: CarrierCase,
        outcome: Outcome,
        error: type[CarrierError],
        retry_after: float | None,
    ) -> None:
        """Down or busy: retry later (after the carrier's wait); sent without an answer:
        unknown; refused: permanent, never retried."""
        with pytest.raises(CarrierError) as caught:
            built(case, outcome).submit(segment())
        assert type(caught.value) is error
        assert caught.value.carrier == NAME
        assert caught.value.retry_after == retry_after

    @pytest.mark.parametrize(
        ("outcome", "blames_account"),
        [(Outcome.BAD_NUMBER, False), (Outcome.BAD_CREDENTIALS, True)],
    )
    def test_says_whom_a_refusal_blames(
        self, case: CarrierCase, outcome: Outcome, blames_account: bool
    ) -> None:
        """A refused account fails over to another carrier; a refused message does not."""
        with pytest.raises(CarrierRejectedError) as caught:
            built(case, outcome).submit(segment())
        assert is_carrier_side(caught.value) is blames_account

    def test_parses_its_receipts(self, case: CarrierCase) -> None:
        """The carrier's report about the id it gave becomes that id's receipt."""
        carrier_id, given = submitted(case)
        receipts = built(case).parse_receipts(case.receipt(given, carrier_id))
        assert [(r.carrier_id, r.status) for r in receipts] == [
            (carrier_id, SegmentStatus.DELIVERED)
        ]

    def test_garbage_is_a_validation_error(self, case: CarrierCase) -> None:
        """Anything that is not a valid receipt is refused as invalid, never a crash."""
        _, given = submitted(case)
        carrier = built(case)
        for request in case.garbage(given):
            with pytest.raises(ValidationError):
                carrier.parse_receipts(request)

    def test_its_receipt_requests_are_authenticated(self, case: CarrierCase) -> None:
        """The carrier's own request gets in for its segment; a forged token does not, nor a
        request without token (or with a signature that no longer matches)."""
        carrier_id, given = submitted(case)
        auth = callback_auth(case)
        request = case.receipt(given, carrier_id)
        verdict = auth.check(NAME, request)
        assert (verdict.reason, verdict.ref) == (None, "m1:1")
        forged = replace(request, query={**request.query, "token": "A" * 22})
        assert auth.check(NAME, forged).reason == BAD_TOKEN
        assert auth.check(NAME, without_token(request)).reason is not None

    def test_signatures_as_declared(self, case: CarrierCase) -> None:
        """As `receipt_auth` says: a carrier's own signature is checked even beside a valid
        token; a `receipt_secret` signature stands in for the token (a request may then list
        many segments), another secret's does not; for the others a signature is no token."""
        config = config_of(case)
        auth = callback_auth(case)
        carrier_id, given = submitted(case)
        request = case.receipt(given, carrier_id)
        declared = config.adapter.receipt_auth
        if declared is ReceiptAuth.SIGNATURE:
            assert auth.check(NAME, altered(request)).reason == BAD_SIGNATURE
        elif declared is ReceiptAuth.RECEIPT_SECRET and config.receipt_secret.get_secret_value():
            secret = config.receipt_secret.get_secret_value()
            bare = without_token(request)
            assert auth.check(NAME, signed_by(secret, bare)).reason is None
            assert auth.check(NAME, signed_by(generate_secret(), bare)).reason == BAD_SIGNATURE
            assert auth.check(NAME, altered(signed_by(secret, request))).reason == BAD_SIGNATURE
        else:
            signed = signed_by(generate_secret(), without_token(request))
            assert auth.check(NAME, signed).reason is not None

    @pytest.mark.parametrize(
        ("outcome", "ok"),
        [
            (Outcome.ACCEPTED, True),
            (Outcome.BAD_CREDENTIALS, False),
            (Outcome.DOWN, False),
            (Outcome.UNREACHABLE, False),
        ],
    )
    def test_health_probe(self, case: CarrierCase, outcome: Outcome, ok: bool) -> None:
        """Up, credentials refused, down or unreachable, said in words; never an SMS sent."""
        config = config_of(case)
        result = config.adapter.probe(config.options, staged(case, outcome))
        assert result.ok is ok
        assert result.detail
        assert case.sms_sent() == 0

    def test_configuration_round_trips(self, case: CarrierCase) -> None:
        """Its table validates, dumps and validates again to the same; unknown keys fail."""
        config = config_of(case)
        assert CarrierConfig.model_validate(config.model_dump()) == config
        options = config.options
        assert type(options).model_validate(options.model_dump()) == options
        assert set(case.table) - {"type"} <= set(type(options).model_fields)
        with pytest.raises(pydantic.ValidationError, match="no_such_key"):
            CarrierConfig(**case.table, no_such_key=1)


@pytest.fixture(params=type_names())
def registered_case(request: pytest.FixtureRequest) -> Iterator[CarrierCase]:
    case_class = CASES.get(request.param)
    if case_class is None:
        pytest.fail(f"no conformance test data for carrier type {request.param!r}: add to CASES")
    case = case_class()
    yield case
    case.close()


class TestRegisteredAdapters(Conformance):
    """Every adapter in `worker.carriers.adapters`."""

    @pytest.fixture
    def case(self, registered_case: CarrierCase) -> CarrierCase:
        return registered_case
