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
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import httptools
import httpx

from worker import http1
from worker.errors import (
    UnsafeUrlError,
    WebhookGoneError,
    WebhookRejectedError,
    WebhookUnavailableError,
)
from worker.receipts.channels import Outgoing
from worker.retry_after import parse_retry_after
from worker.ssrf import (
    Endpoint,
    IPAddress,
    IPNetwork,
    ParsedUrl,
    Resolver,
    check_url,
    resolve_safe,
)
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


# Tests give an httpx transport per pool instead of the network (`httpx.MockTransport`).
TransportFactory = Callable[[PoolKey], httpx.AsyncBaseTransport]


class Reply(Protocol):
    """An answer's status and headers; its body still to be read (`drain`) or dropped."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def drain(self, budget: float, limit: int) -> bool: ...


def classify(status: int, headers: Mapping[str, str]) -> int:
    """Return a 2xx status; raise the matching `WebhookError` for anything else."""
    if 200 <= status < 300:
        return status
    if status == 410:
        raise WebhookGoneError("HTTP 410 Gone", status_code=status)
    if status == 429 or status >= 500:
        raise WebhookUnavailableError(
            f"HTTP {status}",
            status_code=status,
            retry_after=parse_retry_after(headers.get("retry-after"), cap=MAX_RETRY_AFTER),
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
        self._transport_factory = transport_factory
        self._clock = clock
        self._pools: OrderedDict[PoolKey, http1.Pool | httpx.AsyncBaseTransport] = OrderedDict()
        self._resolved: dict[tuple[str, int], tuple[float, IPAddress]] = {}
        self._checked: dict[str, ParsedUrl] = {}  # check_url is pure for this client's rules
        self._tls = ssl.create_default_context()

    async def send(
        self, outgoing: Outgoing, secrets: Sequence[str], *, timestamp: int | None = None
    ) -> int:
        """Deliver one signed request; return its 2xx status or raise a `WebhookError`."""
        started = self._clock()
        try:
            async with asyncio.timeout(self.deadline):
                reply = await self._send(outgoing, secrets, timestamp)
        except TimeoutError as exc:
            raise WebhookUnavailableError(f"timeout after {self.deadline:g} s") from exc
        except httpx.TimeoutException as exc:
            raise WebhookUnavailableError(f"timeout ({type(exc).__name__})") from exc
        except (httpx.TransportError, OSError, EOFError) as exc:
            raise WebhookUnavailableError(_network_reason(exc)) from exc
        except httptools.HttpParserError as exc:
            raise WebhookUnavailableError(f"invalid HTTP answer: {exc}") from exc
        # The status is the answer; the body is read within what is left of the deadline and
        # up to a size, so a hostile endpoint cannot hold us, and then dropped. A broken or
        # slow body does not undo the status the client already sent.
        await reply.drain(self.deadline - (self._clock() - started), self._max_response_bytes)
        return classify(reply.status, reply.headers)

    async def _send(
        self, outgoing: Outgoing, secrets: Sequence[str], timestamp: int | None
    ) -> Reply:
        url = outgoing.url
        parsed = self._check(str(url))
        address = parsed.ip or await self._resolve(parsed.host, parsed.port)
        key = PoolKey(parsed.scheme, parsed.host, parsed.port, str(address))
        when = int(time.time()) if timestamp is None else timestamp
        headers = [
            ("host", url.netloc.decode("ascii")),
            ("user-agent", USER_AGENT),
            *outgoing.headers,
            *signature_headers(secrets, outgoing.webhook_id, when, outgoing.signed).items(),
        ]
        body = outgoing.body if outgoing.method == "POST" else b""
        pool = self._pool(key)
        if isinstance(pool, http1.Pool):
            target = url.raw_path.decode("ascii")
            return await pool.exchange(outgoing.method, target, headers, body)
        return await _HttpxReply.exchange(pool, key, outgoing.method, url, headers, body)

    def _check(self, url: str) -> ParsedUrl:
        """`check_url` under this client's rules, remembered per URL (it does no I/O and the
        rules are fixed, so the answer cannot change; the address is resolved per attempt)."""
        parsed = self._checked.get(url)
        if parsed is None:
            parsed = check_url(url, allow_private=self._allow_private, deny=self._deny)
            if len(self._checked) >= 4 * MAX_POOLS:
                self._checked.clear()
            self._checked[url] = parsed
        return parsed

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

    def _pool(self, key: PoolKey) -> http1.Pool | httpx.AsyncBaseTransport:
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        if self._transport_factory is not None:
            pool = self._transport_factory(key)
        else:
            # TLS SNI and certificate checks on the hostname, not on the address we dial.
            pool = http1.Pool(
                key.address, key.port, tls=self._tls if key.scheme == "https" else None,
                server_hostname=key.host, size=self._pool_size,
                connect_timeout=self._connect_timeout,
            )  # fmt: skip
        self._pools[key] = pool
        while len(self._pools) > MAX_POOLS:
            _, oldest = self._pools.popitem(last=False)
            _close(oldest)
        return pool

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            if isinstance(pool, http1.Pool):
                pool.close()
            else:
                await pool.aclose()


def _close(pool: http1.Pool | httpx.AsyncBaseTransport) -> None:
    if isinstance(pool, http1.Pool):
        pool.close()
    else:
        asyncio.get_running_loop().create_task(pool.aclose())


class _HttpxReply:
    """A `Reply` from an httpx transport (what tests stand in for the network with)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    @classmethod
    async def exchange(
        cls,
        transport: httpx.AsyncBaseTransport,
        key: PoolKey,
        method: str,
        url: httpx.URL,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> _HttpxReply:
        extensions = {"sni_hostname": key.host} if key.scheme == "https" else {}
        request = httpx.Request(
            method, url.copy_with(host=key.address), headers=list(headers),
            content=body if method == "POST" else None, extensions=extensions,
        )  # fmt: skip
        return cls(await transport.handle_async_request(request))

    async def drain(self, budget: float, limit: int) -> bool:
        received = 0
        try:
            if not self.response.is_stream_consumed and budget > 0:
                async with asyncio.timeout(budget):
                    async for chunk in self.response.aiter_raw():
                        received += len(chunk)
                        if received >= limit:
                            return False
        except (TimeoutError, httpx.TransportError):
            return False
        finally:
            await self.response.aclose()
        return True


def _network_reason(exc: Exception) -> str:
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
    if isinstance(exc, EOFError):
        return "the connection closed before an answer"
    connecting = isinstance(exc, httpx.ConnectError | ConnectionRefusedError)
    kind = "cannot connect" if connecting else "network error"
    return f"{kind}: {(str(exc) or type(exc).__name__)[:120]}"


__all__ = ["MAX_RESPONSE_BYTES", "PoolKey", "ReceiptClient", "UnsafeUrlError", "classify"]
