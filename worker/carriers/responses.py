"""Shared translation of carrier HTTP outcomes (status codes, httpx exceptions) into our errors.

The one rule every HTTP adapter uses (`StatusRule`, `request`):

- 2xx: accepted;
- 408, 429, 5xx (and 1xx/3xx: redirects are not followed): `CarrierUnavailableError`, with
  the answer's `Retry-After` (`worker.retry_after`);
- any other 4xx: `CarrierRejectedError`, marked `carrier_side` when the status or the
  carrier's own error code blames the account or gateway rather than the message;
- no connection, or the request never fully left: `CarrierUnavailableError`;
- no answer after the request left (read timeout, dropped connection):
  `CarrierUnknownOutcomeError`; so is a 2xx without the carrier's id (`accepted_id`).

An adapter varies only what its carrier varies: how to read the error code and message from an
answer, and which of its codes blame the account (`StatusRule` fields).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx
import orjson

from worker.carriers.base import InboundRequest, Probe
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)
from worker.retry_after import MAX_RETRY_AFTER, parse_retry_after

_T = TypeVar("_T")

# Failures that happen before the carrier can have a complete request: safe to send again.
# A write error/timeout means the body never fully left (httpcore swallows plain write errors
# and goes on to read the answer, so one that still surfaces did not deliver the request).
_NOTHING_SENT: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


def error_details(response: httpx.Response) -> tuple[str, str]:
    """The carrier's `(code, message)` from a `{"error": {"code", "message"}}` body, or defaults."""
    code, message = f"http_{response.status_code}", f"carrier answered {response.status_code}"
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return code, message
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        if isinstance(error.get("code"), str) and error["code"]:
            code = error["code"][:64]
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"][:200]
    elif isinstance(error, str) and error:
        code = error[:64]
    return code, message


# Refusals that blame the request's credentials, payment, URL or method, i.e. the carrier account
# or gateway (Kannel answers 403 to bad credentials, 404 or 405 to a wrong URL), not the
# message: another carrier may well take it.
CARRIER_SIDE_STATUSES = frozenset({401, 402, 403, 404, 405})


@dataclass(frozen=True, slots=True)
class StatusRule:
    """The shared status → error rule (module doc), with what one carrier varies."""

    # The carrier's `(code, message)` in a non-2xx answer.
    details: Callable[[httpx.Response], tuple[str, str]] = error_details
    # Refusals (by status, or by the carrier's code) that blame the account, not the message.
    carrier_side_statuses: frozenset[int] = CARRIER_SIDE_STATUSES
    carrier_side_codes: frozenset[str] = frozenset()

    def check(self, response: httpx.Response, *, carrier: str) -> None:
        """Raise the `CarrierError` a non-2xx answer means; return quietly on 2xx."""
        status = response.status_code
        if 200 <= status < 300:
            return
        code, message = self.details(response)
        # 408 and 429 are the 4xx that mean "not now" rather than "never"; 1xx/3xx mean the
        # carrier did not act on the request here (redirects are not followed).
        if status >= 500 or status in (408, 429) or status < 200 or 300 <= status < 400:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise CarrierUnavailableError(
                message, carrier=carrier, code=code, status_code=status, retry_after=retry_after
            )
        blames_account = status in self.carrier_side_statuses or code in self.carrier_side_codes
        raise CarrierRejectedError(
            message, carrier=carrier, code=code, status_code=status, carrier_side=blames_account
        )


# The rule for carriers that answer errors as `{"error": {"code", "message"}}` (smsq's own shape).
HTTP_RULE = StatusRule()


def raise_for_status(
    response: httpx.Response, *, carrier: str, rule: StatusRule = HTTP_RULE
) -> None:
    """Raise the `CarrierError` a non-2xx answer means under `rule`; return quietly on 2xx."""
    rule.check(response, carrier=carrier)


def transport_error(exc: httpx.HTTPError, *, carrier: str) -> CarrierError:
    """The `CarrierError` for an httpx exception raised while submitting."""
    kind = type(exc).__name__
    if isinstance(exc, _NOTHING_SENT):
        return CarrierUnavailableError(
            f"carrier unreachable: {kind}", carrier=carrier, code="unreachable"
        )
    # Read errors, read timeouts, a dropped connection: the request may have been acted on.
    return CarrierUnknownOutcomeError(
        f"no answer from carrier: {kind}", carrier=carrier, code="no_answer"
    )


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    carrier: str,
    rule: StatusRule = HTTP_RULE,
    content: bytes | None = None,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    """Make a submission request; transport errors and non-2xx answers raise `CarrierError`s
    (the module doc's rule)."""
    try:
        response = client.request(
            method,
            url,
            content=content,
            data=data,
            headers=headers,
            auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth,
        )
    except httpx.HTTPError as exc:
        raise transport_error(exc, carrier=carrier) from exc
    rule.check(response, carrier=carrier)
    return response


def probe_http(client: httpx.Client, url: str, *, auth: tuple[str, str] | None = None) -> Probe:
    """GET `url` (the cheapest authenticated request a carrier has; never an SMS) and read the
    answer: 401/403 credentials refused, 5xx or no connection down, anything else reachable."""
    try:
        response = client.get(url, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth)
    except httpx.HTTPError as exc:
        return Probe(False, f"unreachable ({type(exc).__name__})")
    status = response.status_code
    if status in (401, 403):
        return Probe(False, f"credentials refused ({status})")
    if status >= 500:
        return Probe(False, f"answers {status}")
    return Probe(True, f"reachable ({status})")


def post_json(
    client: httpx.Client,
    url: str,
    body: Mapping[str, object],
    *,
    carrier: str,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST a JSON body; translate transport errors and non-2xx answers into `CarrierError`s."""
    all_headers = {"content-type": "application/json"}
    all_headers.update(headers or {})
    return request(
        client, "POST", url, carrier=carrier, content=orjson.dumps(body), headers=all_headers
    )


def accepted_id(response: httpx.Response, path: str, *, carrier: str) -> str:
    """The carrier id at dotted `path` in a 2xx JSON body; unknown outcome when it is missing."""
    try:
        value: object = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        value = None
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        # The carrier said 2xx, so it probably took the segment; without an id we cannot
        # tell, and resending blindly could send it twice.
        raise CarrierUnknownOutcomeError(
            f"carrier answered {response.status_code} without {path!r}",
            carrier=carrier,
            code="malformed_response",
            status_code=response.status_code,
        )
    return value


def receipt_fields(request: InboundRequest) -> list[dict[str, object]]:
    """The receipt objects in a form, else a JSON body (object or list), else the query."""
    # A form-encoded POST arrives with both `form` and the raw `body`: the form wins.
    if request.form:
        return [dict(request.form)]
    if request.body.strip():
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise ValidationError("receipt body is not valid JSON", field="body") from exc
        items = data if isinstance(data, list) else [data]
        if not items or not all(isinstance(item, dict) for item in items):
            raise ValidationError("receipt must be a JSON object or a list of them", field="body")
        return items
    if request.query:
        return [dict(request.query)]
    raise ValidationError("empty receipt", field="body")


def required_str(item: Mapping[str, object], key: str, *, max_length: int = 128) -> str:
    """A non-empty string field of a receipt, or `ValidationError`."""
    value = item.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise ValidationError(f"receipt needs a string {key!r}", field=key)
    return value.strip()


def optional_str(item: Mapping[str, object], key: str, *, max_length: int = 200) -> str | None:
    """A string field of a receipt if present (numbers become strings), else None."""
    value = item.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        return None
    return value[:max_length]


def lookup(table: Mapping[str, _T], word: str, *, field: str) -> _T:
    """`table[word]` case-insensitively, or `ValidationError` naming `field`."""
    try:
        return table[word.strip().upper()]
    except KeyError:
        raise ValidationError(f"unknown receipt {field} {word[:32]!r}", field=field) from None


__all__: list[str] = [
    "CARRIER_SIDE_STATUSES",
    "HTTP_RULE",
    "MAX_RETRY_AFTER",
    "StatusRule",
    "accepted_id",
    "error_details",
    "lookup",
    "optional_str",
    "parse_retry_after",
    "post_json",
    "probe_http",
    "raise_for_status",
    "receipt_fields",
    "request",
    "required_str",
    "transport_error",
]
