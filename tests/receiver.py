"""A receipt receiver for tests: a Starlette app that records what arrives and answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Records every request; `answer` decides the status code of each (default 200)."""

    answer: Callable[[Received], int] = lambda _: 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            item = Received(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.body(),
                at=time.time(),
            )
            status = self.answer(item)
            with self.lock:
                self.received.append(item)
            return Response(b"", status_code=status)

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until at least `count` requests arrived; return them (fails the test if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.snapshot()
            if len(items) >= count:
                return items
            time.sleep(0.05)
        items = self.snapshot()
        raise AssertionError(f"expected {count} requests, got {len(items)}: {items!r}"[:2000])
