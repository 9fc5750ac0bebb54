"""The receipt engine: delivers client receipts, many at once, endpoint by endpoint.

One engine per `dlr` worker process runs an asyncio loop in a thread of its own. The
`sms.dlr.drain` task wakes it for one endpoint (`ring`) and returns at once; the engine then
drains that endpoint's queue (`worker.store.receipts`): it takes the receipts due, claims them
in one round trip, sends them concurrently over kept-alive connections
(`worker.receipts.client`) — at most `endpoint_concurrency` at a time to this endpoint,
`key_concurrency` for its API key, `max_in_flight` in all — records every outcome in one round
trip, and takes again until nothing is due. Only one drain of an endpoint runs at a time in
the whole system (the queue's ring flag), so a slow or dead endpoint occupies its own drain
and nothing else: other endpoints' drains run beside it, and the worker's threads are never
held. An endpoint that keeps failing is backed off as a whole (`HealthPolicy`); its receipts
wait in its queue, durably, and are retried on their own schedules (`worker.receipts.retries`).

Everything the engine holds in memory is also in Redis: a receipt it took is claimed with a
lease, and still on the reconciler's watch list; if the process dies, the lease runs out and
the reconciler routes the receipt again (delivery is at least once, under a stable
`webhook-id`). On a warm shutdown (`stop`) drains finish their round and hand their endpoint
back, so another worker goes on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

import redis

from worker import metrics
from worker.clock import now_ms
from worker.errors import WebhookError, WebhookGoneError
from worker.keys import KeyStore
from worker.receipts.channels import Outgoing, channel_for
from worker.receipts.client import ReceiptClient
from worker.receipts.config import EngineConfig
from worker.receipts.endpoints import HealthPolicy, Round, endpoint_for
from worker.receipts.payload import build_payload
from worker.receipts.retries import next_attempt_at
from worker.receipts.routing import ReceiptRouter
from worker.store.receipts import (
    BatchEvent,
    Claim,
    EndpointHealth,
    ReceiptStore,
    Routing,
    Settlement,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SECRETS_CACHE_SECONDS = 5.0
# A drain holds its endpoint this long (ms), renewed while it works: a drain that died frees
# its endpoint for the next one after this at most.
HOLD_MS = 15_000
# A batch callback event in an endpoint's queue is `b:{batch id}` (receipts: `{id}:{level}`).
EVENT_PREFIX = "b:"


class EngineStoppedError(RuntimeError):
    """The engine is stopping or stopped: a drain cannot start here."""


@dataclass(slots=True)
class Attempt:
    """One request: one receipt, several (`dlr-batch`) to the same URL, or a batch event."""

    claims: list[Claim]
    outgoing: Outgoing
    batch_id: str = ""  # a `dlr-batch` POST's webhook-id
    event: BatchEvent | None = None


@dataclass(slots=True)
class Outcome:
    """What one attempt came to."""

    attempt: Attempt
    status_code: int | None = None
    error: WebhookError | None = None
    ms: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class _Settled:
    """A round's bookkeeping: the settlements, and what to route again afterwards."""

    settlements: list[Settlement] = field(default_factory=list)
    retries: list[tuple[tuple[str, int], int]] = field(default_factory=list)  # (ref, due)
    routing: dict[str, Routing] = field(default_factory=dict)
    dead: int = 0
    events_sent: list[BatchEvent] = field(default_factory=list)


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
        self._secrets: dict[str, tuple[float, tuple[str, ...]]] = {}
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

    def ring(self, endpoint: str) -> None:
        """Drain `endpoint` (unless this process drains it already); returns at once."""
        loop = self._loop
        if loop is None or self._closing:
            raise EngineStoppedError("the receipt engine is not running")
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
        token = uuid.uuid4().hex
        try:
            await self._drain_queue(endpoint, token)
        except BaseException:
            # Give the endpoint up at once (if Redis answers), so the next receipt routed there
            # starts another drain rather than waiting for the hold to run out.
            with contextlib.suppress(redis.RedisError, RuntimeError):
                await self._call(self.store.hold, endpoint, token, 0)
            raise

    async def _drain_queue(self, endpoint: str, token: str) -> None:
        health: EndpointHealth | None = None
        idle = 0
        pause_until = 0  # after a `dlr-batch` POST: gather the next batch for a window first
        while True:
            if health is None:
                health = await self._call(self.store.health, endpoint)
            stop = self._closing or pause_until > 0
            limit = 0 if stop else self._take_size(health)
            take = await self._call(
                self.store.take, endpoint, token, self.clock(), limit, HOLD_MS,
                keep=idle < self.config.linger_rounds and not stop, not_before=pause_until,
            )  # fmt: skip
            if take.state == "items":
                idle = 0
                heartbeat = asyncio.get_running_loop().create_task(
                    self._hold(endpoint, token)
                )
                try:
                    health, batched = await self._round(endpoint, take.items, health)
                finally:
                    heartbeat.cancel()
                if batched:
                    pause_until = self.clock() + self.config.batch_window_ms
            elif take.state == "idle":
                idle += 1
                await asyncio.sleep(self.config.linger_ms / 1000)
            else:
                if take.state in ("later", "backoff"):
                    await self._call(self.router.ring, endpoint, take.at)
                return

    async def _hold(self, endpoint: str, token: str) -> None:
        """Keep the drain's hold on its endpoint while a long round runs."""
        while True:
            await asyncio.sleep(HOLD_MS / 3000)
            await self._call(self.store.hold, endpoint, token, HOLD_MS)

    def _take_size(self, health: EndpointHealth) -> int:
        """Many receipts from a healthy endpoint; a few from a failing one; after a backoff,
        one (a probe) until it answers."""
        if health.backoffs:
            return 1
        if health.failures:
            return self.config.endpoint_concurrency
        return self.config.take

    # -- one round: claim, send, settle -----------------------------------------------------
    async def _round(
        self, endpoint: str, members: Sequence[str], health: EndpointHealth
    ) -> tuple[EndpointHealth, bool]:
        """Claim, send and settle one take's receipts; the endpoint's health afterwards, and
        whether any went in a `dlr-batch` POST."""
        now = self.clock()
        refs = [_ref(m) for m in members if not m.startswith(EVENT_PREFIX)]
        batch_ids = [m.removeprefix(EVENT_PREFIX) for m in members if m.startswith(EVENT_PREFIX)]
        claims: list[Claim] = []
        if refs:
            answers = await self._call(
                self.store.claim, refs, now, self.config.lease_ms(len(refs))
            )
            claims = [answer for answer in answers if isinstance(answer, Claim)]
        events: list[BatchEvent] = []
        if batch_ids:
            events = [e for e in await self._call(self.store.batch_events, batch_ids) if e]
        attempts = self._attempts(claims) + [_event_attempt(event) for event in events]
        if not attempts:
            return health, False
        key_id = claims[0].key_id if claims else events[0].key_id
        outcomes = await self._send_all(attempts, key_id)
        sample = str(attempts[0].outgoing.url)
        health = await self._update_health(endpoint, health, outcomes, key_id, sample)
        return health, any(attempt.batch_id for attempt in attempts)

    async def _update_health(
        self,
        endpoint: str,
        health: EndpointHealth,
        outcomes: list[Outcome],
        key_id: str,
        url: str,
    ) -> EndpointHealth:
        """Record the endpoint's health after a round (only when it changed)."""
        updated = self.policy.after(health, _round_of(outcomes), self.clock())
        if updated is None:
            if health.failures or health.backoffs:
                await self._call(self.store.set_health, endpoint, None)
            return EndpointHealth()
        origin = health.origin or endpoint_for(key_id, url).origin
        updated = replace(updated, origin=origin)
        if updated != health:
            await self._call(self.store.set_health, endpoint, updated)
        return updated

    async def _send_all(self, attempts: list[Attempt], key_id: str) -> list[Outcome]:
        """Send a round's requests concurrently (within the caps) and record each outcome as
        it comes: settlements are written in groups while other requests are in flight, so
        that few sent receipts are ever unrecorded at once (a crash repeats only those)."""
        secrets = await self._signing_secrets(key_id)
        commits = _GroupCommit(self)
        outcomes: list[Outcome] = []
        if not secrets:  # the key was deleted: we never send unsigned receipts
            unsigned = UnsignedReceiptError("the API key is gone")
            for attempt in attempts:
                outcomes.append(Outcome(attempt, error=unsigned))
                commits.add(outcomes[-1])
        else:
            per_endpoint = asyncio.Semaphore(self.config.endpoint_concurrency)
            per_key = self._key_slots(key_id)
            for finished in asyncio.as_completed(
                [self._attempt(a, secrets, per_endpoint, per_key) for a in attempts]
            ):
                outcomes.append(await finished)
                commits.add(outcomes[-1])
        await commits.done()
        return outcomes

    def _attempts(self, claims: list[Claim]) -> list[Attempt]:
        attempts: list[Attempt] = []
        batches: dict[str, list[Claim]] = {}
        for claim in claims:
            channel = channel_for(claim.dlr_method, batch=claim.dlr_batch)
            if channel.batches:
                batches.setdefault(claim.dlr_url, []).append(claim)
                continue
            payload = build_payload(claim)
            outgoing = channel.encode(claim.dlr_url, [payload], payload["event_id"])
            attempts.append(Attempt([claim], outgoing))
        size = self.config.batch_max
        for url, group in batches.items():
            for start in range(0, len(group), size):
                part = group[start : start + size]
                batch_id = f"batch_{uuid.uuid4().hex}"
                channel = channel_for("POST", batch=True)
                outgoing = channel.encode(url, [build_payload(c) for c in part], batch_id)
                attempts.append(Attempt(part, outgoing, batch_id))
        return attempts

    async def _attempt(
        self,
        attempt: Attempt,
        secrets: tuple[str, ...],
        per_endpoint: asyncio.Semaphore,
        per_key: asyncio.Semaphore,
    ) -> Outcome:
        assert self._all is not None
        async with self._all, per_key, per_endpoint:
            started = time.monotonic()
            try:
                status = await self.client.send(attempt.outgoing, secrets)
            except WebhookError as exc:
                return Outcome(attempt, exc.status_code, exc, _ms_since(started))
            return Outcome(attempt, status, None, _ms_since(started))

    def _settle(self, outcomes: list[Outcome], now: int) -> _Settled:
        settled = _Settled()
        for outcome in outcomes:
            event = outcome.attempt.event
            if event is not None and outcome.ok:
                settled.events_sent.append(event)
            for claim in outcome.attempt.claims:
                settled.routing[claim.message_id] = Routing(
                    claim.dlr_url, claim.dlr_method, claim.dlr_batch, claim.key_id
                )
                settled.settlements.append(self._settlement(claim, outcome, now, settled))
        return settled

    def _settlement(
        self, claim: Claim, outcome: Outcome, now: int, settled: _Settled
    ) -> Settlement:
        event: dict[str, Any] = {
            "level": claim.level,
            "attempt": claim.attempt,
            "status_code": outcome.status_code,
            "ms": outcome.ms,
        }
        if outcome.attempt.batch_id:
            event["batch"] = outcome.attempt.batch_id
        error = outcome.error
        result, due, why = "sent", 0, ""
        if isinstance(error, WebhookGoneError):
            result = "gone"
        elif isinstance(error, UnsignedReceiptError):
            result, event["reason"] = "dead", "unsigned_refused"
        elif error is not None:
            why = str(error)[:200]
            event["error"] = type(error).__name__
            next_at = next_attempt_at(claim, error, now)
            if next_at is None:
                result = "dead"
            else:
                result, due = "retry", next_at
                settled.retries.append(((claim.message_id, claim.level), due))
        if result == "dead":
            settled.dead += 1
        metrics.RECEIPT_ATTEMPTS.labels(result).inc()
        return Settlement(
            claim.message_id,
            claim.level,
            result,
            {"event": f"receipt_{result}", **event, **({"why": why} if why else {})},
            due=due,
            why=why,
            clear_why=claim.attempt > 1,
        )

    def _record(self, settled: _Settled) -> None:
        """Settle a round's receipts, then route what they call for: released level 2s now,
        retries when due (blocking I/O: runs on an I/O thread)."""
        answers = self.store.settle(settled.settlements, self.clock())
        released = [
            (s.message_id, 2)
            for s, answer in zip(settled.settlements, answers, strict=True)
            if answer == 2
        ]
        self.router.route(released, routing=settled.routing)
        if settled.retries:
            refs, dues = zip(*settled.retries, strict=True)
            self.router.route(list(refs), routing=settled.routing, dues=list(dues))
        if settled.events_sent:
            self.store.batch_events_sent(settled.events_sent)
        if settled.dead:
            self.store.count("receipt_dead", settled.dead)
            log.warning("receipts dead-lettered", extra={"receipts": settled.dead})

    # -- caches -----------------------------------------------------------------------------
    async def _signing_secrets(self, key_id: str) -> tuple[str, ...]:
        cached = self._secrets.get(key_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        secrets = tuple(await self._call(self.keys.signing_secrets, key_id))
        self._secrets[key_id] = (now + SECRETS_CACHE_SECONDS, secrets)
        return secrets

    def _key_slots(self, key_id: str) -> asyncio.Semaphore:
        slots = self._per_key.get(key_id)
        if slots is None:
            if len(self._per_key) > 10_000:
                self._per_key = {k: s for k, s in self._per_key.items() if s.locked()}
            slots = self._per_key[key_id] = asyncio.Semaphore(self.config.key_concurrency)
        return slots


class _GroupCommit:
    """Settles outcomes as they come, one write in flight at a time: what comes while a
    write runs goes in the next one."""

    def __init__(self, engine: ReceiptEngine) -> None:
        self.engine = engine
        self.pending: list[Outcome] = []
        self.writing: asyncio.Task[None] | None = None

    def add(self, outcome: Outcome) -> None:
        self.pending.append(outcome)
        if self.writing is None or self.writing.done():
            self.writing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self.pending:
            group, self.pending = self.pending, []
            settled = self.engine._settle(group, self.engine.clock())
            await self.engine._call(self.engine._record, settled)

    async def done(self) -> None:
        while self.writing is not None and not self.writing.done():
            await self.writing
        if self.writing is not None:
            self.writing.result()  # raise what a write raised


class UnsignedReceiptError(WebhookError):
    """No signing secret: the receipt is never sent unsigned."""


def _event_attempt(event: BatchEvent) -> Attempt:
    outgoing = channel_for("POST").encode(event.url, [event.body], event.event_id)
    return Attempt([], outgoing, event=event)


def _ref(member: str) -> tuple[str, int]:
    message_id, _, level = member.rpartition(":")
    return message_id, int(level)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _round_of(outcomes: list[Outcome]) -> Round:
    ordered = sorted(outcomes, key=lambda o: o.ms)
    failures = [o.error for o in ordered if o.error is not None]
    retry_after = max((e.retry_after or 0.0 for e in failures), default=0.0)
    return Round(
        tuple(o.ok for o in ordered),
        reason=str(failures[-1])[:200] if failures else "",
        retry_after=retry_after or None,
    )
