"""One drain of one endpoint's receipt queue, inside the receipt engine.

A drain keeps up to `endpoint_concurrency` requests in flight to its endpoint: each of that
many workers takes the next attempt from a small buffer, and the one that finds it empty
refills it (takes the receipts due, claims them in one round trip). Outcomes are recorded
group-committed (what ends while a write runs goes in the next one); a worker goes on to its
next attempt while its outcome is written, unless `endpoint_concurrency` outcomes already wait,
so at most twice that many sent receipts are ever unrecorded at once (a crash re-sends them
under the same `webhook-id`) and the endpoint's connections are not idle while Redis writes.
The endpoint's health follows every outcome: when it starts backing off, the next take says so
and the drain ends, a drain planned for the end of the backoff. The drain holds its endpoint
(the ring flag, renewed while it runs) until its last worker finds nothing due; then the next
receipt routed there starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from worker.errors import WebhookError
from worker.mo import webhook as mo_webhook
from worker.receipts.channels import channel_for
from worker.receipts.client import ReceiptClient
from worker.receipts.config import EngineConfig
from worker.receipts.endpoints import HealthPolicy, Round, endpoint_for
from worker.receipts.outcomes import Attempt, Outcome, UnsignedReceiptError, record, settle
from worker.receipts.payload import build_payload
from worker.receipts.routing import ReceiptRouter
from worker.store.mo import MoClaim
from worker.store.receipts import BatchEvent, Claim, EndpointHealth, ReceiptStore, Take

# A drain holds its endpoint this long (ms), renewed while it works: a drain that died frees
# its endpoint for the next one after this at most.
HOLD_MS = 15_000
# A batch callback event in an endpoint's queue is `b:{batch id}`, an inbound message's
# webhook `m:{mo id}` (`worker.mo.webhook`); receipts are `{id}:{level}`.
EVENT_PREFIX = "b:"
MO_PREFIX = mo_webhook.MEMBER_PREFIX


@dataclass(frozen=True, slots=True)
class Kit:
    """What a drain uses of its engine."""

    store: ReceiptStore
    router: ReceiptRouter
    client: ReceiptClient
    config: EngineConfig
    policy: HealthPolicy
    clock: Callable[[], int]
    call: Callable[..., Awaitable[Any]]  # blocking store I/O, off the loop
    secrets: Callable[[str], Awaitable[tuple[str, ...]]]  # an API key's signing secrets (cached)
    key_slots: Callable[[str], asyncio.Semaphore]  # in flight per API key
    all_slots: asyncio.Semaphore  # in flight in this process
    closing: Callable[[], bool]
    batching: set[str]  # endpoints whose receipts travel in `dlr-batch` POSTs


@dataclass(slots=True)
class Drain:
    """A drain of `endpoint`'s queue; `run` until nothing is due there."""

    kit: Kit
    endpoint: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    health: EndpointHealth = field(default_factory=EndpointHealth)
    buffer: deque[Attempt] = field(default_factory=deque)
    refilling: asyncio.Lock = field(default_factory=asyncio.Lock)
    writing_health: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: int = 0  # workers with an attempt taken and not yet recorded
    idle: int = 0  # takes in a row that found nothing due
    pause_until: int = 0  # after a `dlr-batch` POST: the next batch gathers until then
    ending: Take | None = None  # the take that ended the drain
    prefetching: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self) -> None:
        kit = self.kit
        try:
            self.health = await kit.call(kit.store.health, self.endpoint)
            commits = _GroupCommit(self)
            holding = asyncio.get_running_loop().create_task(self._hold())
            try:
                workers = [self._work(commits) for _ in range(kit.config.endpoint_concurrency)]
                await asyncio.gather(*workers)
                await asyncio.gather(*self.prefetching, return_exceptions=True)
            finally:
                holding.cancel()
            await commits.done()
            if self.ending is not None and self.ending.state in ("later", "backoff"):
                await kit.call(kit.router.ring, self.endpoint, self.ending.at)
        except BaseException:
            # Give the endpoint up at once (if Redis answers), so the next receipt routed there
            # starts another drain rather than waiting for the hold to run out.
            with contextlib.suppress(redis.RedisError, RuntimeError):
                await kit.call(kit.store.hold, self.endpoint, self.token, 0)
            raise

    async def _hold(self) -> None:
        """Keep the hold on the endpoint while the drain runs."""
        while True:
            await asyncio.sleep(HOLD_MS / 3000)
            await self.kit.call(self.kit.store.hold, self.endpoint, self.token, HOLD_MS)

    async def _work(self, commits: _GroupCommit) -> None:
        # An attempt is busy from its take until its outcome is written: only the last worker
        # with nothing busy may end the drain (a written outcome may route receipts here).
        while (attempt := await self._next()) is not None:
            self.busy += 1
            try:
                outcome = await self._send(attempt)
            except BaseException:
                self.busy -= 1
                raise
            written = commits.submit(outcome)
            written.add_done_callback(self._written)
            await self._observe(outcome)
            if commits.waiting() > self.kit.config.endpoint_concurrency:
                await asyncio.shield(written)
            commits.raise_failure()

    def _written(self, _: asyncio.Future[None]) -> None:
        self.busy -= 1

    # -- taking -----------------------------------------------------------------------------
    async def _next(self) -> Attempt | None:
        """The next attempt to make; None when the drain is over."""
        while True:
            if self.buffer:
                attempt = self.buffer.popleft()
                if len(self.buffer) < self.kit.config.endpoint_concurrency:
                    self._prefetch()
                return attempt
            if self.ending is not None:
                return None
            async with self.refilling:
                if not self.buffer and self.ending is None:
                    await self._refill()

    def _prefetch(self) -> None:
        """A healthy endpoint's next receipts are taken while the last ones are sent, so its
        connections do not wait for a take when the buffer runs dry."""
        kit = self.kit
        if (
            self.refilling.locked() or self.ending is not None or self.pause_until > 0
            or kit.closing() or self.health.failures or self.health.backoffs
        ):  # fmt: skip
            return
        task = asyncio.get_running_loop().create_task(self._prefetch_run())
        self.prefetching.add(task)
        task.add_done_callback(self.prefetching.discard)

    async def _prefetch_run(self) -> None:
        async with self.refilling:
            if len(self.buffer) >= self.kit.config.endpoint_concurrency or self.ending:
                return
            with contextlib.suppress(redis.RedisError):  # a worker's own take will say it
                await self._refill(prefetch=True)

    async def _refill(self, *, prefetch: bool = False) -> None:
        kit = self.kit
        stop = kit.closing() or self.pause_until > 0
        limit = 0 if stop else self._take_size()
        # Only the last worker may end the drain: until then the outcomes of the others can
        # still route receipts here (a released level 2, a retry), which this drain must take.
        last = self.busy == 0 and not prefetch
        keep = not stop and (not last or self.idle < kit.config.linger_rounds)
        take = await kit.call(
            kit.store.take, self.endpoint, self.token, kit.clock(), limit, HOLD_MS,
            keep=keep, not_before=self.pause_until,
        )  # fmt: skip
        if take.state == "items":
            self.idle = 0
            attempts = await self._prepare(take.items)
            batched = any(attempt.batch_id for attempt in attempts)
            _remember(kit.batching, self.endpoint, batched)
            if batched and len(take.items) < limit:
                self.pause_until = kit.clock() + kit.config.batch_window_ms
            self.buffer.extend(attempts)
        elif take.state == "idle":
            if prefetch:
                return  # nothing more yet: the workers' own takes linger
            self.idle += 1
            await asyncio.sleep(kit.config.linger_ms / 1000)
        else:
            self.ending = take

    def _take_size(self) -> int:
        """Many receipts from a healthy endpoint (a whole batch from one taking `dlr-batch`);
        a few from a failing one; after a backoff, one (a probe) until it answers."""
        config = self.kit.config
        if self.health.backoffs:
            return 1
        if self.health.failures:
            return config.endpoint_concurrency
        if self.endpoint in self.kit.batching:
            return max(config.take, config.batch_max)
        return config.take

    async def _prepare(self, members: Sequence[str]) -> list[Attempt]:
        """Claim the receipts and MO webhooks (and load the batch events) taken; one request
        each, or one per `dlr-batch` group."""
        kit = self.kit
        batch_ids = [m.removeprefix(EVENT_PREFIX) for m in members if m.startswith(EVENT_PREFIX)]
        mo_ids = [m.removeprefix(MO_PREFIX) for m in members if m.startswith(MO_PREFIX)]
        refs = [_ref(m) for m in members if not m.startswith((EVENT_PREFIX, MO_PREFIX))]
        claims: list[Claim] = []
        if refs:
            lease = kit.config.lease_ms(len(refs))
            answers = await kit.call(kit.store.claim, refs, kit.clock(), lease)
            claims = [answer for answer in answers if isinstance(answer, Claim)]
        events: list[BatchEvent] = []
        if batch_ids:
            events = [e for e in await kit.call(kit.store.batch_events, batch_ids) if e]
        mos: list[MoClaim] = []
        if mo_ids:
            lease = kit.config.lease_ms(len(mo_ids))
            mos = [c for c in await kit.call(kit.store.mo.claim, mo_ids, kit.clock(), lease) if c]
        return (
            _attempts(claims, kit.config.batch_max)
            + [_event_attempt(e) for e in events]
            + [Attempt([], mo_webhook.outgoing(c), c.record.key_id, mo=c) for c in mos]
        )

    # -- sending ----------------------------------------------------------------------------
    async def _send(self, attempt: Attempt) -> Outcome:
        kit = self.kit
        secrets = await kit.secrets(attempt.key_id)  # the engine remembers them briefly
        if not secrets:  # the key was deleted: we never send unsigned receipts
            return Outcome(attempt, error=UnsignedReceiptError("the API key is gone"))
        async with kit.all_slots, kit.key_slots(attempt.key_id):
            started = time.monotonic()
            try:
                status = await kit.client.send(attempt.outgoing, secrets)
            except WebhookError as exc:
                return Outcome(attempt, exc.status_code, exc, _ms_since(started))
            return Outcome(attempt, status, None, _ms_since(started))

    async def _observe(self, outcome: Outcome) -> None:
        """Follow the endpoint's health; record it when it changed (a backoff at once, so the
        next take sees it). Workers update it in turn; writes go one at a time, the latest."""
        kit = self.kit
        before = self.health
        after = kit.policy.after(before, _round_of([outcome]), kit.clock())
        if after is not None and not after.origin:
            url = str(outcome.attempt.outgoing.url)
            after = replace(after, origin=endpoint_for(outcome.attempt.key_id, url).origin)
        self.health = after or EndpointHealth()
        if self.health == before:
            return
        async with self.writing_health:
            latest = self.health
            healthy = not (latest.failures or latest.backoffs)
            await kit.call(kit.store.set_health, self.endpoint, None if healthy else latest)


class _GroupCommit:
    """Records outcomes as they come, one write in flight at a time: what comes while a write
    runs goes in the next one. `submit` returns a future done once its outcome is written; a
    failed write fails the drain (`raise_failure`, `done`), and its receipts' leases run out."""

    def __init__(self, drain: Drain) -> None:
        self.drain = drain
        self.pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self.unwritten = 0
        self.writing: asyncio.Task[None] | None = None
        self.failure: Exception | None = None

    def submit(self, outcome: Outcome) -> asyncio.Future[None]:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            written.set_exception(self.failure)
            written.exception()
            return written
        self.pending.append((outcome, written))
        self.unwritten += 1
        if self.writing is None or self.writing.done():
            self.writing = asyncio.get_running_loop().create_task(self._write())
        return written

    def waiting(self) -> int:
        """Outcomes submitted and not yet written."""
        return self.unwritten

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def _write(self) -> None:
        kit = self.drain.kit
        while self.pending:
            group, self.pending = self.pending, []
            try:
                settled = settle([outcome for outcome, _ in group], kit.clock())
                await kit.call(record, kit.store, kit.router, settled, kit.clock)
            except Exception as exc:  # noqa: BLE001 - the drain fails with it (raise_failure)
                self.failure = exc
                for _, written in group + self.pending:
                    written.set_exception(exc)
                    written.exception()  # retrieved: raised once, by raise_failure
                self.unwritten, self.pending = 0, []
                return
            self.unwritten -= len(group)
            for _, written in group:
                written.set_result(None)

    async def done(self) -> None:
        """Wait for every outcome to be written; raise what a write raised."""
        if self.writing is not None:
            with contextlib.suppress(BaseException):
                await self.writing
        self.raise_failure()


def _attempts(claims: list[Claim], batch_max: int) -> list[Attempt]:
    """One request per receipt, or per up to `batch_max` `dlr-batch` receipts to one URL."""
    attempts: list[Attempt] = []
    batches: dict[str, list[Claim]] = {}
    for claim in claims:
        channel = channel_for(claim.dlr_method, batch=claim.dlr_batch)
        if channel.batches:
            batches.setdefault(claim.dlr_url, []).append(claim)
            continue
        payload = build_payload(claim)
        outgoing = channel.encode(claim.dlr_url, [payload], payload["event_id"])
        attempts.append(Attempt([claim], outgoing, claim.key_id))
    batch = channel_for("POST", batch=True)
    for url, group in batches.items():
        for start in range(0, len(group), batch_max):
            part = group[start : start + batch_max]
            batch_id = f"batch_{uuid.uuid4().hex}"
            outgoing = batch.encode(url, [build_payload(c) for c in part], batch_id)
            attempts.append(Attempt(part, outgoing, part[0].key_id, batch_id))
    return attempts


def _event_attempt(event: BatchEvent) -> Attempt:
    outgoing = channel_for("POST").encode(event.url, [event.body], event.event_id)
    return Attempt([], outgoing, event.key_id, event=event)


def _remember(batching: set[str], endpoint: str, batched: bool) -> None:
    if not batched:
        batching.discard(endpoint)
        return
    if len(batching) > 10_000:
        batching.clear()
    batching.add(endpoint)


def _ref(member: str) -> tuple[str, int]:
    message_id, _, level = member.rpartition(":")
    return message_id, int(level)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _round_of(outcomes: Sequence[Outcome]) -> Round:
    failures = [o.error for o in outcomes if o.error is not None]
    retry_after = max((e.retry_after or 0.0 for e in failures), default=0.0)
    return Round(
        tuple(o.ok for o in outcomes),
        reason=str(failures[-1])[:200] if failures else "",
        retry_after=retry_after or None,
    )
