"""Deliver one signed receipt to a client's `dlr-url` through the SSRF guard; classify the outcome.

- POST sends the payload as compact JSON. GET sends its scalar fields as query parameters after
  any query the URL already has; one level of nesting is flattened with `_`
  (`segments.total` → `segments_total`, `error.code` → `error_code`); `None` values are left
  out (an absent parameter means null, so an empty string keeps meaning an empty string);
  booleans are `true`/`false` as in the JSON.
- A batch (`send_batch`, `dlr-batch`) is one POST of `{"receipts": [payload, ...]}`.
- Both are signed per Standard Webhooks (`worker.webhooks`; for GET the signed "body" is the
  exact query string sent).
- At most `max_response_bytes` of the answer are read (and then dropped: response bodies are
  never stored or echoed to tenants), within `read_timeout`.
- httpx exceptions and status codes are translated here, once: 2xx returns the status; 410 →
  `WebhookGoneError`; 429/5xx, timeouts and network errors → `WebhookUnavailableError`
  (with `Retry-After`); 3xx (never followed) and other 4xx → `WebhookRejectedError`; a URL
  the guard refuses → `UnsafeUrlError`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal, Self
from urllib.parse import quote, urlencode

import httpx
import orjson

from worker.errors import WebhookGoneError, WebhookRejectedError, WebhookUnavailableError
from worker.settings import Settings
from worker.ssrf import (
    IPNetwork,
    PinnedTransport,
    Resolver,
    check_url,
    direct_transport,
    parse_networks,
)
from worker.webhooks import signature_headers

MAX_RESPONSE_BYTES = 65_536
USER_AGENT = "smsq-receipts/1"


def flatten_query(payload: Mapping[str, object]) -> list[tuple[str, str]]:
    """The payload's scalar fields as query parameters, one level of nesting joined with `_`."""
    pairs: list[tuple[str, str]] = []
    for key, value in payload.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                _append_scalar(pairs, f"{key}_{sub_key}", sub_value)
        else:
            _append_scalar(pairs, key, value)
    return pairs


def _append_scalar(pairs: list[tuple[str, str]], name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        pairs.append((name, "true" if value else "false"))
    elif isinstance(value, str | int | float):
        pairs.append((name, str(value)))
    else:
        raise TypeError(f"receipt field {name!r} is not a scalar: {type(value).__name__}")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or HTTP-date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(response: httpx.Response) -> int:
    """Return the status of a 2xx answer; raise the matching `WebhookError` for anything else."""
    status = response.status_code
    if 200 <= status < 300:
        return status
    if status == 410:
        raise WebhookGoneError("the receipt URL answered 410 Gone", status_code=status)
    if status == 429 or status >= 500:
        raise WebhookUnavailableError(
            f"the receipt URL answered {status}",
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if 300 <= status < 400:
        raise WebhookRejectedError(
            f"the receipt URL answered {status}; redirects are not followed", status_code=status
        )
    raise WebhookRejectedError(f"the receipt URL answered {status}", status_code=status)


class CallbackSender:
    """Sends receipts to client URLs; one per process, holding one `httpx.Client`."""

    def __init__(
        self,
        allow_private: Sequence[IPNetwork] = (),
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        resolver: Resolver = socket.getaddrinfo,
        transport_factory: Callable[[], httpx.BaseTransport] = direct_transport,
    ) -> None:
        self._allow_private = tuple(allow_private)
        self._read_timeout = read_timeout
        self._max_response_bytes = max_response_bytes
        transport = PinnedTransport(
            transport_factory(), allow_private=self._allow_private, resolver=resolver
        )
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=False,  # the default; said out loud because a redirect is an SSRF
            trust_env=False,  # no proxies or .netrc credentials from the environment
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            headers={"user-agent": USER_AGENT},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """A sender configured from `SMSQ_DLR_*` settings."""
        return cls(
            allow_private=parse_networks(settings.dlr_allow_private),
            connect_timeout=settings.dlr_connect_timeout,
            read_timeout=settings.dlr_read_timeout,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def send(
        self,
        url: str,
        method: Literal["GET", "POST"],
        payload: Mapping[str, object],
        *,
        event_id: str,
        secrets: Sequence[str],
        timestamp: int | None = None,
    ) -> int:
        """Deliver one receipt; return the 2xx status or raise a `WebhookError` subclass."""
        request = self._build_request(url, method, payload)
        signed = request.content if method == "POST" else request.url.query
        when = int(time.time()) if timestamp is None else timestamp
        request.headers.update(signature_headers(secrets, event_id, when, signed))
        try:
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise WebhookUnavailableError(f"the receipt URL timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise WebhookUnavailableError(f"the receipt URL is unreachable: {exc!r}") from exc
        try:
            self._drain(response)
        finally:
            response.close()
        return classify(response)

    def send_batch(
        self,
        url: str,
        receipts: Sequence[Mapping[str, object]],
        *,
        webhook_id: str,
        secrets: Sequence[str],
        timestamp: int | None = None,
    ) -> int:
        """Deliver several receipts in one POST, body `{"receipts": [...]}` (`dlr-batch`),
        signed as a whole under the batch's own `webhook_id`; like `send` otherwise."""
        body = {"receipts": list(receipts)}
        return self.send(
            url, "POST", body, event_id=webhook_id, secrets=secrets, timestamp=timestamp
        )

    def _build_request(
        self, url: str, method: Literal["GET", "POST"], payload: Mapping[str, object]
    ) -> httpx.Request:
        target = httpx.URL(check_url(url, allow_private=self._allow_private).url)
        if method == "POST":
            return self._client.build_request(
                "POST",
                target,
                content=orjson.dumps(dict(payload)),
                headers={"content-type": "application/json"},
            )
        if method == "GET":
            ours = urlencode(flatten_query(payload), quote_via=quote).encode("ascii")
            query = target.query + b"&" + ours if target.query else ours
            return self._client.build_request("GET", target.copy_with(query=query))
        raise ValueError(f"receipt method must be GET or POST, not {method!r}")

    def _drain(self, response: httpx.Response) -> None:
        # The status is the answer; the body is read only up to a size and time budget so a
        # hostile endpoint cannot hold a worker, and then dropped.
        if response.is_stream_consumed:
            return  # already buffered by the transport (test doubles do this)
        received = 0
        deadline = time.monotonic() + self._read_timeout
        try:
            for chunk in response.iter_raw():
                received += len(chunk)
                if received >= self._max_response_bytes or time.monotonic() >= deadline:
                    break
        except httpx.TransportError:
            pass  # a broken body does not undo the status line the client already sent
