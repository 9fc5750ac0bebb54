"""Tests for the shared carrier outcome mapping (`worker.carriers.responses`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from worker.carriers.responses import (
    MAX_RETRY_AFTER,
    StatusRule,
    accepted_id,
    error_details,
    parse_retry_after,
    raise_for_status,
    request,
    transport_error,
)
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("", None),
            ("  ", None),
            ("7", 7.0),
            (" 2.5 ", 2.5),
            ("-3", 0.0),
            ("nan", None),
            ("999999", MAX_RETRY_AFTER),
            ("soon", None),
            (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
            (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
            ("Thu, 02 Jan 2025 03:04:15", 10.0),  # no zone: GMT, as RFC 7231 says
        ],
    )
    def test_reads_seconds_and_http_dates(self, value: str | None, expected: float | None) -> None:
        """Delta-seconds and HTTP-dates become non-negative, capped seconds; junk is None."""
        assert parse_retry_after(value, now=NOW) == expected


def _response(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers)


class TestRaiseForStatus:
    @pytest.mark.parametrize(
        ("status", "headers", "error", "retry_after"),
        [
            (400, {}, CarrierRejectedError, None),
            (401, {}, CarrierRejectedError, None),
            (404, {}, CarrierRejectedError, None),
            (410, {}, CarrierRejectedError, None),
            (422, {}, CarrierRejectedError, None),
            (408, {}, CarrierUnavailableError, None),
            (429, {}, CarrierUnavailableError, None),
            (429, {"retry-after": "12"}, CarrierUnavailableError, 12.0),
            (500, {}, CarrierUnavailableError, None),
            (502, {}, CarrierUnavailableError, None),
            (503, {"retry-after": "3"}, CarrierUnavailableError, 3.0),
            (302, {"location": "http://elsewhere/"}, CarrierUnavailableError, None),
        ],
    )
    def test_maps_status_to_error(
        self,
        status: int,
        headers: dict[str, str],
        error: type[CarrierError],
        retry_after: float | None,
    ) -> None:
        """4xx is permanent except 408/429; 5xx, 429 and 3xx are transient with Retry-After."""
        with pytest.raises(error) as caught:
            raise_for_status(_response(status, headers=headers), carrier="c")
        assert type(caught.value) is error
        assert caught.value.status_code == status
        assert caught.value.carrier == "c"
        assert caught.value.retry_after == retry_after

    @pytest.mark.parametrize("status", [200, 201, 202, 204])
    def test_passes_2xx(self, status: int) -> None:
        """Any 2xx raises nothing."""
        raise_for_status(_response(status), carrier="c")

    @pytest.mark.parametrize(
        ("status", "body", "carrier_side"),
        [
            (400, b"", False),
            (422, b"", False),
            (401, b"", True),
            (402, b"", True),
            (403, b"", True),
            (404, b"", True),
            (405, b"", True),
            (400, b'{"error": {"code": "no_route"}}', True),
        ],
    )
    def test_says_whether_a_refusal_blames_the_account(
        self, status: int, body: bytes, carrier_side: bool
    ) -> None:
        """Credentials, payment, URL or method, or a code the carrier names, blame the account."""
        rule = StatusRule(carrier_side_codes=frozenset({"no_route"}))
        with pytest.raises(CarrierRejectedError) as caught:
            raise_for_status(_response(status, body), carrier="c", rule=rule)
        assert caught.value.carrier_side is carrier_side

    def test_a_carrier_reads_its_own_error_details(self) -> None:
        """The rule is the same; only reading code and message is the carrier's."""
        rule = StatusRule(details=lambda response: ("own", response.text))
        with pytest.raises(CarrierUnavailableError) as caught:
            raise_for_status(_response(503, b"busy", {"retry-after": "4"}), carrier="c", rule=rule)
        assert (caught.value.code, caught.value.message, caught.value.retry_after) == (
            "own",
            "busy",
            4.0,
        )


class TestRequest:
    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            (httpx.Response(202), None),
            (httpx.Response(503), CarrierUnavailableError),
            (httpx.Response(400), CarrierRejectedError),
            (httpx.ConnectError("refused"), CarrierUnavailableError),
            (httpx.ReadTimeout("slow"), CarrierUnknownOutcomeError),
        ],
    )
    def test_applies_the_rule_to_answers_and_transport_errors(
        self, answer: httpx.Response | httpx.HTTPError, error: type[CarrierError] | None
    ) -> None:
        """One call: the answer when accepted, else the `CarrierError` it means."""

        def handler(request_: httpx.Request) -> httpx.Response:
            if isinstance(answer, Exception):
                raise answer
            return answer

        with httpx.Client(transport=httpx.MockTransport(handler)) as client:
            if error is None:
                assert request(client, "GET", "http://c.test/", carrier="c").status_code == 202
                return
            with pytest.raises(error) as caught:
                request(client, "GET", "http://c.test/", carrier="c")
        assert caught.value.carrier == "c"


class TestErrorDetails:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (b'{"error": {"code": "no_credit", "message": "top up"}}', ("no_credit", "top up")),
            (b'{"error": "blocked"}', ("blocked", "carrier answered 400")),
            (b'{"error": {"code": 7}}', ("http_400", "carrier answered 400")),
            (b"[1, 2]", ("http_400", "carrier answered 400")),
            (b"<html>nope</html>", ("http_400", "carrier answered 400")),
            (b"", ("http_400", "carrier answered 400")),
        ],
    )
    def test_reads_the_carriers_code(self, body: bytes, expected: tuple[str, str]) -> None:
        """The carrier's own code and message are used when present, defaults otherwise."""
        assert error_details(_response(400, body)) == expected


class TestTransportError:
    @pytest.mark.parametrize(
        ("exc", "error"),
        [
            (httpx.ConnectError("refused"), CarrierUnavailableError),
            (httpx.ConnectTimeout("slow"), CarrierUnavailableError),
            (httpx.PoolTimeout("busy"), CarrierUnavailableError),
            (httpx.WriteError("reset"), CarrierUnavailableError),
            (httpx.WriteTimeout("slow"), CarrierUnavailableError),
            (httpx.ReadTimeout("slow"), CarrierUnknownOutcomeError),
            (httpx.ReadError("reset"), CarrierUnknownOutcomeError),
            (httpx.RemoteProtocolError("hung up"), CarrierUnknownOutcomeError),
            (httpx.CloseError("closing"), CarrierUnknownOutcomeError),
        ],
    )
    def test_classifies_by_whether_the_request_left(
        self, exc: httpx.HTTPError, error: type[CarrierError]
    ) -> None:
        """Errors before the request is complete are retryable; after it, the outcome is unknown."""
        assert type(transport_error(exc, carrier="c")) is error


class TestAcceptedId:
    @pytest.mark.parametrize(
        ("body", "path", "expected"),
        [
            (b'{"id": "abc"}', "id", "abc"),
            (b'{"id": 42}', "id", "42"),
            (b'{"data": {"sid": "SM1"}}', "data.sid", "SM1"),
        ],
    )
    def test_reads_the_id(self, body: bytes, path: str, expected: str) -> None:
        """The id is read at a dotted path; a numeric id becomes a string."""
        assert accepted_id(_response(200, body), path, carrier="c") == expected

    @pytest.mark.parametrize(
        "body", [b"", b"not json", b"[]", b'{"id": ""}', b'{"id": null}', b'{"id": true}']
    )
    def test_missing_id_is_unknown_outcome(self, body: bytes) -> None:
        """A 2xx without a usable id may have been sent: unknown outcome, not a retry."""
        with pytest.raises(CarrierUnknownOutcomeError):
            accepted_id(_response(200, body), "id", carrier="c")
