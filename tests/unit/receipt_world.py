"""A receipt engine on fakeredis whose network is a scripted handler: the unit-test world.

The engine runs for real (its own loop thread, its I/O threads); a drain task published now
wakes it at once, as a `dlr` worker taking the task would, and one published for later waits
in `later` until the test moves the clock and calls `due()`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import fakeredis
import httpx
import orjson

from worker.contract import DRAIN_RECEIPTS, DlrMethod
from worker.keys import CreatedKey, KeyStore
from worker.receipts.client import ReceiptClient
from worker.receipts.config import EngineConfig
from worker.receipts.engine import ReceiptEngine
from worker.receipts.routing import ReceiptRouter
from worker.store import Message, Store, new_message_id
from worker.store.receipts import ReceiptStore, Routing

PUBLIC_V4 = "93.184.215.14"
URL = "https://client.test/r"

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def public_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, port))]


def ok(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


class Clock:
    """Milliseconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now


class Publisher:
    """Delivers drain tasks to the engine at once (a worker taking them); keeps later ones."""

    def __init__(self) -> None:
        self.engine: ReceiptEngine | None = None
        self.now: list[tuple[str, list[Any], str]] = []
        self.later: list[tuple[str, list[Any], str, float]] = []
        self.lock = threading.Lock()

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        with self.lock:
            self.now.append((task, list(args), queue))
        if task == DRAIN_RECEIPTS and self.engine is not None:
            self.engine.ring(str(args[0]), batching=len(args) > 1)

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        with self.lock:
            self.later.append((task, list(args), queue, delay))


class World:
    """One tenant's key, a store, a router and a running engine; `requests` is what left."""

    def __init__(
        self,
        handler: Handler = ok,
        config: EngineConfig | None = None,
        **client_settings: Any,
    ) -> None:
        self.config = config or EngineConfig(deadline=1.0, linger_rounds=0)
        self.redis = fakeredis.FakeRedis(decode_responses=True)
        self.store = Store(self.redis)
        self.receipts = ReceiptStore(self.redis)
        self.keys = KeyStore(self.redis)
        self.key: CreatedKey = self.keys.create("tenant")
        self.clock = Clock()
        self.publisher = Publisher()
        self.router = ReceiptRouter(self.receipts, self.publisher, self.config, clock=self.clock)
        self.requests: list[httpx.Request] = []
        self.handler = handler

        async def record(request: httpx.Request) -> httpx.Response:
            await request.aread()
            self.requests.append(request)
            answer = self.handler(request)
            return await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[return-value]

        client_settings.setdefault("resolver", public_resolver)
        client = ReceiptClient(
            transport_factory=lambda key: httpx.MockTransport(record),
            deadline=self.config.deadline,
            **client_settings,
        )
        self.engine = ReceiptEngine(
            self.receipts, self.keys, self.router, client, self.config, clock=self.clock
        )
        self.publisher.engine = self.engine
        self.engine.start()

    def close(self) -> None:
        self.engine.stop(2.0)

    # -- messages -------------------------------------------------------------------------
    def message(
        self,
        level: int = 1,
        url: str = URL,
        *,
        method: str = "POST",
        batch: bool = False,
        key_id: str | None = None,
        status: str = "accepted",
    ) -> Message:
        """A stored one-segment message whose submission ended `status`."""
        message = Message(
            id=new_message_id(), to="+14155552671", sender="smsq", content="hi", segments=1,
            dlr=True, dlr_level=level, dlr_url=url, dlr_method=DlrMethod(method), dlr_batch=batch,
            key_id=self.key.key.id if key_id is None else key_id, client_ref="ref-1",
        )  # fmt: skip
        self.store.create(message)
        self.store.set_fields(message.id, {"submit_outcome": status, "submitted_at": "1000"})
        self.redis.hset(f"smsq:msg:{message.id}:seg", mapping={"1:status": status,
                                                                "1:carrier": "sim"})
        return message

    def open(self, message: Message, level: int) -> None:
        """Open the level's receipt (its content fixed now) and route it."""
        assert self.store.open_receipt(message.id, level)
        where = Routing(message.dlr_url, message.dlr_method, message.dlr_batch, message.key_id)
        self.router.route([(message.id, level)], routing={message.id: where})

    def sent(self, message: Message | None = None) -> list[dict[str, Any]]:
        """The receipts that arrived (a batch's one by one), optionally of one message."""
        out: list[dict[str, Any]] = []
        for request in list(self.requests):
            if request.method == "GET":
                out.append(dict(request.url.params))
                continue
            body = orjson.loads(request.content)
            out.extend(body.get("receipts", [body]))
        return [r for r in out if message is None or r.get("id") == message.id]

    def state(self, message: Message, level: int) -> str | None:
        return self.store.fields(message.id).get(f"rcpt:{level}:state")

    # -- time -----------------------------------------------------------------------------
    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the engine drains nothing (what is left is planned for later)."""
        deadline = time.monotonic() + timeout
        while self._draining(deadline):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the engine still drains {self.engine.draining()}")
            time.sleep(0.01)

    def _draining(self, deadline: float) -> bool:
        """Whether a drain runs, asked on the engine's loop: a ring is a callback queued on
        that loop, so every ring made before this question has been taken by then (a drain
        rings from within itself, so what it sets off is asked about while it still runs)."""
        loop = self.engine._loop  # the engine's own loop, read only to queue the question
        assert loop is not None
        answer: list[bool] = []
        asked = threading.Event()

        def ask() -> None:
            answer.append(bool(self.engine.draining()))
            asked.set()

        loop.call_soon_threadsafe(ask)
        if not asked.wait(max(deadline - time.monotonic(), 0.1)):
            raise TimeoutError("the engine's loop did not answer")
        return answer[0]

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        raise TimeoutError("the condition did not come true")

    def advance(self, ms: int) -> None:
        """Once the engine is quiet (every drain it was rung for has planned what it
        leaves for later), move the clock and run the drains that were planned until then."""
        self.settle()
        self.clock.now += ms
        with self.publisher.lock:
            planned, self.publisher.later = self.publisher.later, []
        for task, args, _queue, _delay in planned:
            if task == DRAIN_RECEIPTS:
                self.engine.ring(str(args[0]), batching=len(args) > 1)
        self.settle()

    def later_drains(self) -> list[float]:
        return [delay for task, _, _, delay in self.publisher.later if task == DRAIN_RECEIPTS]


def slow(seconds: float) -> Handler:
    async def handle(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return httpx.Response(200)

    return handle


def config(**changes: Any) -> EngineConfig:
    return replace(EngineConfig(deadline=1.0, linger_rounds=0), **changes)
