"""Tests for the shared carrier outcome mapping (`worker.carriers.responses`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from worker.carriers.responses import (
    MAX_RETRY_AFTER,
    accepted_id,
    error_details,
    parse_retry_after,
    raise_for_status,
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
