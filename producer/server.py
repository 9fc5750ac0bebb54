"""The API's HTTP server: uvicorn, bounded against slow and numerous clients.

Plain uvicorn holds a connection whose request headers never complete for as long as the client
likes (it has no header timeout) and takes every connection offered. Here:

- **Header timeout** (`SMSQ_API_HEADER_TIMEOUT`, 10 s): a connection must deliver a request's
  complete headers within that many seconds of connecting (or of starting its next request);
  else it gets `408 Request Timeout` and is closed. uvicorn has no such option, hence the small
  protocol subclass below (the body is the app's business: its size is capped there).
- **Concurrency limit** (`SMSQ_API_MAX_CONNECTIONS`, 1000 per process): uvicorn's
  `limit_concurrency`. With that many connections or requests in flight, a new request gets
  `503` at once instead of queueing without end.

A production deployment puts a reverse proxy in front as well (docs/operations.md).
`python -m producer.server [--host H] [--port P]` runs it; `api_command` is that command line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.settings import Settings, get_settings

APP = "producer.api:create_app"
_TIMEOUT_BODY = b"request headers not received in time"
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers.

    The deadline is `SMSQ_API_HEADER_TIMEOUT`, read in the process that serves: the class is
    the same in every entry point, so it also travels (pickled) to uvicorn's worker processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self.header_timeout = get_settings().api_header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # a kept-alive connection starts its next request

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_header_timer()  # an earlier (pipelined) request is still being answered
            return
        self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def server_config(
    settings: Settings, host: str, port: int, log_level: str = "warning"
) -> uvicorn.Config:
    """uvicorn's configuration for the API: the bounds above (the header timeout is read by the
    protocol itself), no access log (docs/operations.md says why: request lines hold ids, JSON
    logs come from the app)."""
    return uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        http=HeaderTimeoutProtocol,
        limit_concurrency=settings.api_max_connections or None,
        log_level=log_level,
        access_log=False,
    )


def api_command(host: str, port: int) -> list[str]:
    """The command line that runs the API (what `smsq up` starts)."""
    return [sys.executable, "-m", "producer.server", "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m producer.server", description=__doc__)
    parser.add_argument("--host", default=settings.api_host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    uvicorn.Server(server_config(settings, args.host, args.port, args.log_level)).run()


if __name__ == "__main__":
    main()
