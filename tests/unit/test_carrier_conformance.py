"""The carrier conformance suite: every registered adapter, given its test data, passes the same
checks: submit, what went wrong, receipts, receipt authentication, health probe, configuration.

The test data of each adapter is a `CarrierCase` (tests/unit/carrier_cases.py). `Conformance`
holds the checks and runs over a `case` fixture: `TestRegisteredAdapters` gives it every
registered adapter, and a test module that brings an adapter of its own derives from it too
(tests/unit/test_carriers_plugin.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pydantic
import pytest

from tests.unit.carrier_cases import (
    CASES,
    NAME,
    PUBLIC,
    SERVER_KEY,
    CarrierCase,
    Outcome,
    receipt_url,
    segment,
)
from worker.carriers.adapters import adapter_for, type_names
from worker.carriers.base import (
    AdapterContext,
    CarrierAdapter,
    InboundRequest,
    ReceiptAuth,
)
from worker.carriers.config import CarrierConfig, CarriersConfig, RouteConfig
from worker.carriers.options import AdapterOptions
from worker.carriers.routing import is_carrier_side
from worker.contract import SegmentStatus
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)
from worker.receipts.tokens import BAD_SIGNATURE, BAD_TOKEN, CallbackAuth
from worker.settings import Settings
from worker.webhooks import generate_secret, signature_headers


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
