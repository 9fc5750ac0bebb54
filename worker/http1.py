"""A small HTTP/1.1 client on asyncio streams, for requests smsq makes by the thousand.

Receipts to clients and the carrier simulator's receipts are many small requests to few
origins: a request line, a few headers, a small body, and an answer whose status is all that
matters. httpx (through httpcore and anyio) spent more CPU per such request than everything
else the receipt engine does (py-spy, bench e2e); this client writes the request in one go,
parses the answer with httptools (C, as uvicorn does), and keeps connections alive per pool.

- `Pool` holds up to `size` idle connections to one address (the caller keys pools, e.g. by
  hostname *and* pinned address, so a connection verified for one hostname never carries
  another's requests). TLS verifies the certificate for `server_hostname`.
- `exchange` sends one request and reads its status line and headers; the body is read by
  `Answer.drain` up to a size, within a time budget, and dropped (or kept, up to the size).
  A kept-alive connection the server had closed fails before any byte of an answer: the
  request is then sent once more on a fresh connection (it cannot have been processed).
- Errors are the standard ones: `OSError` (`ConnectionRefusedError`, `ConnectionResetError`,
  `ssl.SSLError`, ...), `EOFError` for an answer cut short, `httptools.HttpParserError` for a
  malformed one. Timeouts are the caller's (`asyncio.timeout` around `exchange`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import httptools

READ_CHUNK = 65_536


class _Parsed:
    """httptools callbacks: the answer's headers and (up to a size) its body.

    Whether the connection may carry another request is read *inside* the completion callback:
    afterwards llhttp has reset for the next message and `should_keep_alive()` says False.
    """

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.done = False
        self.keep_alive = False
        self.body = bytearray()
        self.keep = 0  # bytes of body to keep (0: drop it)
        self.parser: httptools.HttpResponseParser | None = None  # set once it is made

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self.keep - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        self.done = True
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def closed(self) -> bool:
        return self.writer.is_closing() or self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Answer:
    """An answer's status and headers; `drain` reads (and drops) its body, then hands the
    connection back to its pool when it can carry another request."""

    status: int
    headers: dict[str, str]
    _pool: Pool
    _connection: Connection | None
    _parser: httptools.HttpResponseParser
    _parsed: _Parsed

    @property
    def body(self) -> bytes:
        return bytes(self._parsed.body)

    async def drain(self, budget: float, limit: int = READ_CHUNK, keep: int = 0) -> bool:
        """Read the body for at most `budget` s and `limit` bytes (keeping the first `keep`);
        True when it was read whole."""
        self._parsed.keep = keep
        connection, self._connection = self._connection, None
        if connection is None:
            return self._parsed.done
        received = 0
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                while not self._parsed.done and received < limit:
                    chunk = await connection.reader.read(READ_CHUNK)
                    if not chunk:
                        self._parser.feed_data(b"")
                        break
                    received += len(chunk)
                    self._parser.feed_data(chunk)
        except (TimeoutError, OSError, httptools.HttpParserError):
            pass
        if self._parsed.done and self._parsed.keep_alive:
            self._pool.give(connection)
        else:
            connection.close()
        return self._parsed.done

    def discard(self) -> None:
        """Give up on the body: the connection is closed."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class Pool:
    """Kept-alive connections to one address."""

    host: str  # what to connect to (an IP address, when the caller pinned one)
    port: int
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None  # TLS: SNI and the certificate's name
    size: int = 4
    connect_timeout: float = 3.0
    _idle: list[Connection] = field(default_factory=list)

    def give(self, connection: Connection) -> None:
        if len(self._idle) < self.size and not connection.closed:
            self._idle.append(connection)
        else:
            connection.close()

    def _take(self) -> Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            connection.close()
        return None

    async def _open(self) -> Connection:
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname=self.server_hostname if self.tls else None,
                limit=READ_CHUNK,
            )
        return Connection(reader, writer)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def exchange(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> Answer:
        """Send one request, read the answer's status line and headers."""
        head = _head(method, target, headers, body)
        kept = self._take()
        if kept is not None:
            try:
                return await self._on(kept, head, body)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                kept.close()  # the server closed it while idle: nothing of ours was processed
        return await self._on(await self._open(), head, body)

    async def _on(self, connection: Connection, head: bytes, body: bytes) -> Answer:
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)
        try:
            connection.writer.write(head + body if body else head)
            await connection.writer.drain()
            while not parsed.headers_done:
                chunk = await connection.reader.read(READ_CHUNK)
                if not chunk:
                    raise EOFError("the connection closed before an answer")
                parser.feed_data(chunk)
        except BaseException:
            connection.close()
            raise
        return Answer(parser.get_status_code(), parsed.headers, self, connection, parser, parsed)


def _head(method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
