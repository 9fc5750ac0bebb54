"""Every error smsq raises on purpose, in one tree.

SmsqError
├── ValidationError              client input breaks the contract (422 at the API; carries `field`)
│   ├── EncodingError            text cannot be encoded as asked (carries the offending characters)
│   ├── TooManySegmentsError     text needs more segments than allowed (carries `segments`, `limit`)
│   └── OptedOutError            the recipient opted out of the key's messages (`opted_out`)
├── NotFoundError                no such message / batch / key (404)
├── ConflictError                idempotency key reused with another body (409)
├── RateLimitedError             a quota is exhausted (429; carries `retry_after`)
├── CarrierError                 a carrier could not take a segment (carries `carrier`, `code`)
│   ├── CarrierUnavailableError  connect error, 5xx, 429, circuit open: retry later (`retry_after`)
│   ├── CarrierRejectedError     4xx, invalid number, no credit: permanent, never retried
│   └── CarrierUnknownOutcomeError  read timeout after the request left: may or may not be sent
└── WebhookError                 a receipt could not be delivered to the client's URL
    ├── WebhookUnavailableError  timeout, connect error, 5xx, 429: retry later (`retry_after`)
    ├── WebhookGoneError         410: stop for good
    ├── WebhookRejectedError     any other non-2xx (3xx included): retry per the receipt schedule
    └── UnsafeUrlError           the URL points somewhere we refuse to call (SSRF guard)

httpx exceptions and HTTP status codes are translated into these once, in the carrier
adapters and the receipt sender; nothing above them catches an httpx exception.
"""

from __future__ import annotations


class SmsqError(Exception):
    """Base of every error smsq raises on purpose."""


class ValidationError(SmsqError):
    """Client input that breaks the contract; `field` names the offending input."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r}, code={self.code!r})"


class EncodingError(ValidationError):
    """Text that cannot be encoded under the requested coding."""

    def __init__(
        self,
        message: str,
        *,
        characters: tuple[str, ...] = (),
        field: str | None = "content",
        code: str = "encoding",
    ) -> None:
        super().__init__(message, field=field, code=code)
        self.characters = characters


class TooManySegmentsError(ValidationError):
    """Text that needs more segments than the limit allows."""

    def __init__(self, segments: int, limit: int, *, field: str | None = "content") -> None:
        super().__init__(
            f"text needs {segments} segments, more than the limit of {limit}",
            field=field,
            code="too_many_segments",
        )
        self.segments = segments
        self.limit = limit


class OptedOutError(ValidationError):
    """The recipient replied STOP to the sender's messages (`worker.optouts`): refused, 422
    `opted_out` naming `to`."""

    def __init__(self, number: str, *, field: str = "to") -> None:
        super().__init__(
            "the recipient opted out of these messages (replied STOP); it can opt back in by "
            "replying START",
            field=field,
            code="opted_out",
        )
        self.number = number


class NotFoundError(SmsqError):
    """No such message, batch or key."""


class ConflictError(SmsqError):
    """An idempotency key reused with a different body."""


class RateLimitedError(SmsqError):
    """A quota is exhausted; try again after `retry_after` seconds. `code` is the API's
    error code (`destination_under_attack` when a shared OTP ceiling refuses)."""

    def __init__(self, message: str, *, retry_after: float, code: str = "rate_limited") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class CarrierError(SmsqError):
    """A carrier could not take a segment."""

    def __init__(
        self,
        message: str,
        *,
        carrier: str = "",
        code: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.carrier = carrier
        self.code = code
        self.status_code = status_code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, carrier={self.carrier!r}, "
            f"code={self.code!r}, status_code={self.status_code!r})"
        )


class CarrierUnavailableError(CarrierError):
    """Transient: connect error, 5xx, 429 or an open circuit. Retry after a delay."""


class CarrierRejectedError(CarrierError):
    """Permanent: the carrier refused the segment. Never retried.

    `carrier_side`: the refusal blames the carrier account or gateway (credentials, credit,
    sender, no route there), not the message, so another carrier may take it; None when the
    adapter did not say (then its HTTP status decides, `worker.carriers.routing`).
    """

    def __init__(
        self,
        message: str,
        *,
        carrier: str = "",
        code: str = "",
        status_code: int | None = None,
        carrier_side: bool | None = None,
    ) -> None:
        super().__init__(message, carrier=carrier, code=code, status_code=status_code)
        self.carrier_side = carrier_side


class CarrierUnknownOutcomeError(CarrierError):
    """The request left but no answer came back: the segment may have been sent."""


class WebhookError(SmsqError):
    """A receipt could not be delivered to the client's URL."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


class WebhookUnavailableError(WebhookError):
    """Timeout, connect error, 5xx or 429: retry later."""


class WebhookGoneError(WebhookError):
    """410 Gone: the client asked us to stop."""


class WebhookRejectedError(WebhookError):
    """Any other non-2xx answer (3xx included: redirects are never followed)."""


class UnsafeUrlError(WebhookError):
    """The URL points at an address we refuse to call (SSRF guard)."""
