"""A TCP proxy on loopback that loses one reply: it forwards a command to the server, lets the
server run it, then drops the connection instead of forwarding the answer (tests of
docs/reliability.md, "When a Redis reply is lost").

    with LossyProxy(redis_url) as proxy:
        client = redis.Redis.from_url(proxy.url)      # redis_url, through the proxy
        proxy.lose_reply_to(b"XADD")     # armed: the next command containing b"XADD" ...
        client.xadd(...)                 # ... runs on the server; the client sees the
                                         #     connection drop (redis.ConnectionError)
        assert proxy.lost.is_set()

Threads and blocking sockets; every socket and thread is closed by `close` (the context
manager's exit), whatever happened.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536


class _Pair:
    """One client connection and its connection to the server."""

    def __init__(self, downstream: socket.socket, upstream: socket.socket) -> None:
        self.downstream = downstream
        self.upstream = upstream
        self.doomed = False  # the command whose reply is lost went up this connection

    def close(self) -> None:
        for sock in (self.downstream, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class LossyProxy:
    """Forwards connections to the Redis of `redis_url`; loses the reply to one armed
    command. `url` is `redis_url` through the proxy (password and database kept)."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self.lost = threading.Event()  # set once the armed reply was dropped
        self._needle: bytes | None = None
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._start(self._accept)

    def lose_reply_to(self, needle: bytes) -> None:
        """Arm: the next command whose bytes contain `needle` runs, and its reply is lost."""
        with self._lock:
            self._needle = needle
            self.lost.clear()

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        with self._lock:
            self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            pair = _Pair(downstream, upstream)
            with self._lock:
                if self._closed:
                    pair.close()
                    return
                self._pairs.append(pair)
            self._start(self._up, pair)
            self._start(self._down, pair)

    def _up(self, pair: _Pair) -> None:
        """Client to server; marks the connection whose command is armed."""
        while data := _recv(pair.downstream):
            with self._lock:
                if self._needle is not None and self._needle in data:
                    self._needle = None
                    pair.doomed = True
            try:
                pair.upstream.sendall(data)
            except OSError:
                break
        pair.close()

    def _down(self, pair: _Pair) -> None:
        """Server to client; the doomed connection's reply is dropped with the connection."""
        while data := _recv(pair.upstream):
            if pair.doomed:  # the server answered, so the command ran: lose its answer
                self.lost.set()  # before the client can see the connection drop
                pair.close()
                return
            try:
                pair.downstream.sendall(data)
            except OSError:
                break
        pair.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pairs = list(self._pairs)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for pair in pairs:
            pair.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except OSError:
        return b""
