"""Batch counters, and progress / completion callbacks to a batch's `batch_callback_url`.

Counters are derived from the batch's messages' own states (one pipelined read per 1,000
messages). A watched batch (`smsq:batches:watch`, scored by its next check) gets a signed
`batch.progress` event when its counters changed since the last one, at most every
`PROGRESS_INTERVAL_MS`, and one `batch.completed` event when every message is final.
The watcher only decides what to say: the event waits in the batch's hash and travels through
the receipt engine (`worker.receipts`) in the queue of its endpoint, like a receipt, with the
same SSRF guard, signing, deadline and per-endpoint isolation; an event not delivered by the
next check is routed again (completion keeps being retried for a day).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import orjson
import redis

from worker.celery_app import create_app
from worker.clock import iso_ms, now_ms
from worker.contract import FINAL_STATUSES, MessageStatus
from worker.queueing import CeleryPublisher, publishes_directly
from worker.receipts.config import EngineConfig
from worker.receipts.routing import ReceiptRouter
from worker.redis_urls import store_client
from worker.settings import Settings
from worker.store.keys import (
    BATCH_WATCH_KEY,
    BATCH_WATCH_LOCK_KEY,
    batch_ids_key,
    batch_key,
    message_key,
)
from worker.store.receipts import ReceiptStore

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_MS = 10_000
GIVE_UP_AFTER_MS = 24 * 3600 * 1000
CHUNK = 1000


def message_ids(client: redis.Redis, batch_id: str) -> Iterator[list[str]]:
    """The batch's message ids in request order, `CHUNK` at a time."""
    key = batch_ids_key(batch_id)
    total = int(client.llen(key))
    for start in range(0, total, CHUNK):
        yield cast(list[str], client.lrange(key, start, start + CHUNK - 1))


def count_batch(client: redis.Redis, batch_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """Live counters of a batch, read from its messages' states."""
    states: Counter[str] = Counter()
    last_done = 0
    for ids in message_ids(client, batch_id):
        pipe = client.pipeline(transaction=False)
        for message_id in ids:
            pipe.hmget(message_key(message_id), "status", "done_at")
        for status, done_at in pipe.execute():
            states[status] += 1
            last_done = max(last_done, int(done_at or 0))
    accepted = int(fields.get("accepted") or 0)
    finished = sum(states[s] for s in FINAL_STATUSES)
    done = finished == accepted
    return {
        "id": batch_id,
        "total": int(fields.get("total") or 0),
        "accepted": accepted,
        "rejected": int(fields.get("rejected") or 0),
        "queued": states[MessageStatus.QUEUED] + states[MessageStatus.SUBMITTING],
        "scheduled": states[MessageStatus.SCHEDULED],
        "submitted": sum(
            states[s]
            for s in (MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
        ),
        "delivered": states[MessageStatus.DELIVERED],
        "failed": sum(
            states[s]
            for s in (MessageStatus.REJECTED, MessageStatus.FAILED, MessageStatus.UNDELIVERED)
        ),
        "expired": states[MessageStatus.EXPIRED],
        "cancelled": states[MessageStatus.CANCELLED],
        "done": done,
        "created_at": iso_ms(int(fields["created_at"])) if fields.get("created_at") else None,
        "done_at": iso_ms(last_done) if done and last_done else None,
    }


def watch(client: redis.Redis | redis.client.Pipeline, batch_id: str, due_ms: int) -> None:
    client.zadd(BATCH_WATCH_KEY, {batch_id: due_ms})


class BatchWatcher:
    """Decides progress and completion events for watched batches; `tick` does one pass."""

    def __init__(self, client: redis.Redis, receipts: ReceiptStore, router: ReceiptRouter) -> None:
        self.redis = client
        self.receipts = receipts
        self.router = router

    def tick(self, now: int | None = None) -> int:
        now = now or now_ms()
        due = cast(
            list[str], self.redis.zrangebyscore(BATCH_WATCH_KEY, "-inf", now, start=0, num=100)
        )
        for batch_id in due:
            self._check(batch_id, now)
        return len(due)

    def _check(self, batch_id: str, now: int) -> None:
        fields = cast(dict[str, str], self.redis.hgetall(batch_key(batch_id)))
        url = fields.get("callback_url")
        if not url or now - int(fields.get("created_at") or now) > GIVE_UP_AFTER_MS:
            self.redis.zrem(BATCH_WATCH_KEY, batch_id)
            return
        counters = count_batch(self.redis, batch_id, fields)
        signature = orjson.dumps(counters).decode()
        if signature == fields.get("callback_sent"):
            if counters["done"]:
                self.redis.zrem(BATCH_WATCH_KEY, batch_id)
                return
        else:
            self._announce(batch_id, fields, counters, signature)
        self.redis.zadd(BATCH_WATCH_KEY, {batch_id: now + PROGRESS_INTERVAL_MS})

    def _announce(
        self, batch_id: str, fields: dict[str, str], counters: dict[str, Any], signature: str
    ) -> None:
        """Make the event pending (unless it already is) and route it to its endpoint."""
        if fields.get("cb:event_sig") != signature:
            kind = "batch.completed" if counters["done"] else "batch.progress"
            sequence = int(self.redis.hincrby(batch_key(batch_id), "callback_seq", 1))
            event = f"evt_batch_{batch_id}_{'done' if counters['done'] else sequence}"
            body = {"type": kind, "event_id": event, "batch": counters}
            self.receipts.put_batch_event(batch_id, event, body, signature)
        self.router.route_event(batch_id, fields["callback_url"], fields.get("key_id", ""))


def build_watcher(settings: Settings) -> BatchWatcher:
    """The batch watcher of `smsq scheduler`, on the configured Redis."""
    client = store_client(settings, decode_responses=True)
    publisher = CeleryPublisher(create_app(settings), client, direct=publishes_directly(settings))
    receipts = ReceiptStore(client)
    return BatchWatcher(
        client, receipts, ReceiptRouter(receipts, publisher, EngineConfig.from_settings(settings))
    )


def run_watcher(watcher: BatchWatcher, stopping: threading.Event, token: str) -> None:
    """Loop until `stopping`: the holder of the lock checks due batches once a second."""
    try:
        while not stopping.is_set():
            try:
                owner = watcher.redis.set(BATCH_WATCH_LOCK_KEY, token, nx=True, px=5000)
                if owner or watcher.redis.get(BATCH_WATCH_LOCK_KEY) == token:
                    watcher.redis.pexpire(BATCH_WATCH_LOCK_KEY, 5000)
                    watcher.tick()
            except redis.RedisError as exc:
                log.warning("batch watcher: redis unavailable (%s)", type(exc).__name__)
            stopping.wait(1.0)
    finally:
        watcher.redis.close()
