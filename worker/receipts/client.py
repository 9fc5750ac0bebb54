"""Receipt requests over HTTP: SSRF-guarded, pinned, kept alive, within a hard deadline.

- The URL's shape is checked first (`worker.ssrf.check_url`), then its host is resolved once
  (A and AAAA, or an IP literal as is) and refused if any answer is not public or is a denied
  `host:port` (`SMSQ_DLR_DENY`; `worker.ssrf.resolve_safe`); the request connects to the
  first checked address while the `Host` header, TLS SNI and certificate verification stay on
  the hostname. A resolution is remembered for `DNS_CACHE_SECONDS`.
- Connections are kept alive in small pools keyed by (scheme, host, port, pinned address):
  a connection verified for one hostname never carries a request for another, and a host
  that resolves elsewhere next time gets another pool.
- Every attempt has a hard wall-clock deadline (`deadline`: resolve, connect, send and the
  answer's status line and headers together); a response body is then read for what is left
  of it, up to `max_response_bytes`, and dropped (bodies are never stored).
- Outcomes are translated here, once: 2xx returns the status; 410 → `WebhookGoneError`;
  429/5xx, timeouts and network errors → `WebhookUnavailableError` (with `Retry-After`);
  3xx (never followed) and other 4xx → `WebhookRejectedError`; a refused address →
  `UnsafeUrlError`. Each carries a short message saying what happened (shown in
  `GET /sms/{id}` as why a receipt waits).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import httpx

from worker.errors import (
    UnsafeUrlError,
    WebhookGoneError,
    WebhookRejectedError,
    WebhookUnavailableError,
)
from worker.receipts.channels import Outgoing
from worker.retry_after import parse_retry_after
from worker.ssrf import Endpoint, IPAddress, IPNetwork, Resolver, check_url, resolve_safe
from worker.webhooks import signature_headers

MAX_RESPONSE_BYTES = 65_536
USER_AGENT = "smsq-receipts/1"
DNS_CACHE_SECONDS = 10.0
MAX_POOLS = 512
# An endpoint's own `Retry-After` is believed up to this long (the receipt schedule spans 24 h).
MAX_RETRY_AFTER = 10 * 3600.0


class PoolKey(NamedTuple):
    scheme: str
    host: str
    port: int
    address: str


TransportFactory = Callable[[PoolKey], httpx.AsyncBaseTransport]


def classify(response: httpx.Response) -> int:
    """Return the status of a 2xx answer; raise the matching `WebhookError` for anything else."""
    status = response.status_code
    if 200 <= status < 300:
        return status
    if status == 410:
        raise WebhookGoneError("HTTP 410 Gone", status_code=status)
    if status == 429 or status >= 500:
        raise WebhookUnavailableError(
            f"HTTP {status}",
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("retry-after"), cap=MAX_RETRY_AFTER),
        )
    if 300 <= status < 400:
        raise WebhookRejectedError(
            f"HTTP {status} (redirects are not followed)", status_code=status
        )
    raise WebhookRejectedError(f"HTTP {status}", status_code=status)


class ReceiptClient:
    """Sends receipt requests; one per receipt engine (one event loop)."""

    def __init__(
        self,
        *,
        allow_private: Sequence[IPNetwork] = (),
        deny: Sequence[Endpoint] = (),
        deadline: float = 10.0,
        connect_timeout: float = 3.0,
        pool_size: int = 4,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        resolver: Resolver | None = None,
        transport_factory: TransportFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline = deadline
        self._allow_private = tuple(allow_private)
        self._deny = tuple(deny)
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._max_response_bytes = max_response_bytes
        self._resolver = resolver
        self._transport_factory = transport_factory or self._real_transport
        self._clock = clock
        self._pools: OrderedDict[PoolKey, httpx.AsyncBaseTransport] = OrderedDict()
        self._resolved: dict[tuple[str, int], tuple[float, IPAddress]] = {}

    async def send(
        self, outgoing: Outgoing, secrets: Sequence[str], *, timestamp: int | None = None
    ) -> int:
        """Deliver one signed request; return its 2xx status or raise a `WebhookError`."""
        started = self._clock()
        try:
            async with asyncio.timeout(self.deadline):
                response = await self._send(outgoing, secrets, timestamp)
        except TimeoutError as exc:
            raise WebhookUnavailableError(f"timeout after {self.deadline:g} s") from exc
        except httpx.TimeoutException as exc:
            raise WebhookUnavailableError(f"timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise WebhookUnavailableError(_network_reason(exc)) from exc
        try:
            await self._drain(response, self.deadline - (self._clock() - started))
        finally:
            await response.aclose()
        return classify(response)

    async def _send(
        self, outgoing: Outgoing, secrets: Sequence[str], timestamp: int | None
    ) -> httpx.Response:
        url = outgoing.url
        parsed = check_url(str(url), allow_private=self._allow_private, deny=self._deny)
        address = parsed.ip or await self._resolve(parsed.host, parsed.port)
        transport = self._pool(PoolKey(parsed.scheme, parsed.host, parsed.port, str(address)))
        when = int(time.time()) if timestamp is None else timestamp
        headers = [
            ("host", url.netloc.decode("ascii")),
            ("user-agent", USER_AGENT),
            *outgoing.headers,
            *signature_headers(secrets, outgoing.webhook_id, when, outgoing.signed).items(),
        ]
        timeout = {"connect": self._connect_timeout, "read": self.deadline,
                   "write": self.deadline, "pool": self.deadline}  # fmt: skip
        extensions: dict[str, object] = {"timeout": timeout}
        if parsed.scheme == "https":
            # TLS SNI and certificate checks on the hostname, not on the address we dial.
            extensions["sni_hostname"] = parsed.host
        request = httpx.Request(
            outgoing.method,
            url.copy_with(host=str(address)),
            headers=headers,
            content=outgoing.body if outgoing.method == "POST" else None,
            extensions=extensions,
        )
        return await transport.handle_async_request(request)

    async def _resolve(self, host: str, port: int) -> IPAddress:
        """The first checked address of `host` (resolved once, then remembered briefly)."""
        cached = self._resolved.get((host, port))
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        resolver = self._resolver or socket.getaddrinfo
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(
            None, lambda: resolve_safe(host, port, allow_private=self._allow_private,
                                       deny=self._deny, resolver=resolver)
        )  # fmt: skip
        if len(self._resolved) > 4 * MAX_POOLS:
            self._resolved.clear()
        self._resolved[(host, port)] = (now + DNS_CACHE_SECONDS, addresses[0])
        return addresses[0]

    def _pool(self, key: PoolKey) -> httpx.AsyncBaseTransport:
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        pool = self._pools[key] = self._transport_factory(key)
        while len(self._pools) > MAX_POOLS:
            _, oldest = self._pools.popitem(last=False)
            asyncio.get_running_loop().create_task(oldest.aclose())
        return pool

    def _real_transport(self, _key: PoolKey) -> httpx.AsyncBaseTransport:
        # No retries: the receipt schedule is the one retry layer. Keep-alive per pool key.
        limits = httpx.Limits(
            max_connections=self._pool_size,
            max_keepalive_connections=self._pool_size,
            keepalive_expiry=30.0,
        )
        return httpx.AsyncHTTPTransport(retries=0, http2=False, limits=limits, trust_env=False)

    async def _drain(self, response: httpx.Response, budget: float) -> None:
        # The status is the answer; the body is read within what is left of the deadline and
        # up to a size, so a hostile endpoint cannot hold us, and then dropped. A broken or
        # slow body does not undo the status the client already sent.
        if response.is_stream_consumed or budget <= 0:
            return
        received = 0
        try:
            async with asyncio.timeout(budget):
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received >= self._max_response_bytes:
                        break
        except (TimeoutError, httpx.TransportError):
            pass

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


def _network_reason(exc: httpx.TransportError) -> str:
    """What a network error was, in a few words (shown as why a receipt waits)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {str(cause)[:120]}"
        cause = cause.__cause__ or cause.__context__
    kind = "cannot connect" if isinstance(exc, httpx.ConnectError) else "network error"
    return f"{kind}: {(str(exc) or type(exc).__name__)[:120]}"


__all__ = ["MAX_RESPONSE_BYTES", "PoolKey", "ReceiptClient", "UnsafeUrlError", "classify"]
