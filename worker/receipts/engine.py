"""The receipt engine: delivers client receipts, many at once, endpoint by endpoint.

One engine per `dlr` worker process runs an asyncio loop in a thread of its own. The
`sms.dlr.drain` task wakes it for one endpoint (`ring`) and returns at once; the engine then
drains that endpoint's queue (`worker.receipts.drain`): up to `endpoint_concurrency` requests
in flight to it, `key_concurrency` for its API key and `max_in_flight` in all, over kept-alive
connections (`worker.receipts.client`), each outcome recorded as it comes. Only one drain of an
endpoint runs at a time in the whole system (the queue's ring flag), so a slow or dead endpoint
occupies its own drain and nothing else: other endpoints' drains run beside it, and the
worker's threads are never held. An endpoint that keeps failing is backed off as a whole
(`worker.receipts.endpoints.HealthPolicy`); its receipts wait in its queue, durably, and are
retried on their own schedules (`worker.receipts.retries`).

Everything the engine holds in memory is also in Redis: a receipt it took is claimed with a
lease, and still on the reconciler's watch list; if the process dies, the lease runs out and
the reconciler routes the receipt again (delivery is at least once, under a stable
`webhook-id`). On a warm shutdown (`stop`) drains finish what they took and hand their
endpoint back, so another worker goes on at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from worker.clock import now_ms
from worker.keys import KeyStore
from worker.receipts.client import ReceiptClient
from worker.receipts.config import EngineConfig
from worker.receipts.drain import Drain, Kit
from worker.receipts.endpoints import HealthPolicy
from worker.receipts.routing import ReceiptRouter
from worker.store.receipts import ReceiptStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# An API key's signing secrets are read at most every SECRETS_TTL_MS per engine: at one receipt
# per take, the read was one Redis round trip per receipt. A rotation or a deleted key shows
# within that time (docs/security.md).
SECRETS_TTL_MS = 2_000


class EngineStoppedError(RuntimeError):
    """The engine is stopping or stopped: a drain cannot start here."""


class ReceiptEngine:
    """Drains endpoints' receipt queues on an event loop of its own (`start`, `ring`, `stop`)."""

    def __init__(
        self,
        store: ReceiptStore,
        keys: KeyStore,
        router: ReceiptRouter,
        client: ReceiptClient,
        config: EngineConfig,
        *,
        policy: HealthPolicy | None = None,
        clock: Callable[[], int] = now_ms,
        io_threads: int = 4,
    ) -> None:
        self.store = store
        self.keys = keys
        self.router = router
        self.client = client
        self.config = config
        self.policy = policy or HealthPolicy()
        self.clock = clock
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="receipts-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._all: asyncio.Semaphore | None = None
        self._per_key: dict[str, asyncio.Semaphore] = {}
        self._secrets: dict[str, tuple[int, tuple[str, ...]]] = {}  # key id -> (until, secrets)
        self._batching: set[str] = set()  # endpoints whose receipts travel in `dlr-batch` POSTs
        self._closing = False

    # -- lifecycle (any thread) -------------------------------------------------------------
    def start(self) -> None:
        """Start the loop thread (once)."""
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, args=(ready,), name="receipt-engine", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _run_loop(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._all = asyncio.Semaphore(self.config.max_in_flight)
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.client.aclose())
            loop.close()

    def ring(self, endpoint: str, *, batching: bool = False) -> None:
        """Drain `endpoint` (unless this process drains it already); returns at once.
        `batching`: its receipts travel in `dlr-batch` POSTs (take whole batches)."""
        loop = self._loop
        if loop is None or self._closing:
            raise EngineStoppedError("the receipt engine is not running")
        if batching:
            self._batching.add(endpoint)
        loop.call_soon_threadsafe(self._wake, endpoint)

    def stop(self, timeout: float = 10.0) -> None:
        """Let running drains finish their round (at most `timeout` s) and hand their
        endpoints back, then stop the loop."""
        loop = self._loop
        if loop is None or self._closing:
            return
        self._closing = True
        future = asyncio.run_coroutine_threadsafe(self._finish_drains(timeout), loop)
        try:
            future.result(timeout + 5.0)
        except TimeoutError:
            log.warning("receipt engine: drains did not finish in time")
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5.0)
        self._io.shutdown(wait=False)

    def draining(self) -> list[str]:
        """Endpoints this process drains now (for tests and status)."""
        return list(self._drains)

    # -- the loop ---------------------------------------------------------------------------
    def _wake(self, endpoint: str) -> None:
        if self._closing or endpoint in self._drains:
            return  # a running drain takes whatever is due
        task = asyncio.get_running_loop().create_task(self._drain(endpoint))
        self._drains[endpoint] = task
        task.add_done_callback(partial(self._drained, endpoint))

    def _drained(self, endpoint: str, task: asyncio.Task[None]) -> None:
        self._drains.pop(endpoint, None)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "receipt drain failed; the reconciler recovers its receipts",
                exc_info=task.exception(),
                extra={"endpoint": endpoint},
            )

    async def _finish_drains(self, timeout: float) -> None:
        tasks = list(self._drains.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking store I/O on the engine's I/O threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, partial(function, *args, **kwargs))

    async def _drain(self, endpoint: str) -> None:
        assert self._all is not None
        kit = Kit(
            store=self.store, router=self.router, client=self.client, config=self.config,
            policy=self.policy, clock=self.clock, call=self._call,
            secrets=self._signing_secrets, key_slots=self._key_slots, all_slots=self._all,
            closing=lambda: self._closing, batching=self._batching,
        )  # fmt: skip
        await Drain(kit, endpoint).run()

    # -- caches -----------------------------------------------------------------------------
    async def _signing_secrets(self, key_id: str) -> tuple[str, ...]:
        now = self.clock()
        cached = self._secrets.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        secrets = tuple(await self._call(self.keys.signing_secrets, key_id))
        if len(self._secrets) > 10_000:
            self._secrets = {k: v for k, v in self._secrets.items() if v[0] > now}
        self._secrets[key_id] = (now + SECRETS_TTL_MS, secrets)
        return secrets

    def _key_slots(self, key_id: str) -> asyncio.Semaphore:
        slots = self._per_key.get(key_id)
        if slots is None:
            if len(self._per_key) > 10_000:
                self._per_key = {k: s for k, s in self._per_key.items() if s.locked()}
            slots = self._per_key[key_id] = asyncio.Semaphore(self.config.key_concurrency)
        return slots
