"""The durable scheduler: moves due jobs from a Redis sorted set to their Celery queues.

Everything delayed by more than a few seconds (scheduled sends, carrier retry backoff, receipt
retries) is a member of `smsq:schedule` scored by its due time in ms, so it survives restarts of
every process and costs no worker memory. `POP_DUE` moves due members atomically into an
in-flight hash before they are published and removes them after; a scheduler that dies in
between republishes them when it (or another) starts, so nothing is lost — at worst a job is
published twice, and every task is idempotent. A lock lets several schedulers run for
availability while one works (one that stops gives it up, so a standby takes over at its next
poll; one that dies holds it until it lapses); the one holding it also runs the reconciler
(`worker.reconciler`) every `ReconcilerConfig.interval` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import orjson
import redis

from worker.celery_app import create_app
from worker.clock import now_ms
from worker.queueing import INFLIGHT_KEY, SCHEDULE_KEY, CeleryPublisher, publishes_directly
from worker.reconciler import Reconciler, ReconcilerConfig
from worker.redelivery import Redelivery
from worker.redis_urls import broker_for, store_client
from worker.settings import Settings
from worker.store import Store
from worker.store.keys import SCHEDULER_LOCK_KEY

log = logging.getLogger(__name__)

LOCK_KEY = SCHEDULER_LOCK_KEY
LOCK_TTL_MS = 10_000
BATCH = 1000
POLL_SECONDS = 0.1

POP_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('HSET', KEYS[2], member, ARGV[1])
end
return due
"""

# Take or keep the lock only if it is free or already ours.
HOLD_LOCK = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Give the lock up only if it is still ours (it may have lapsed and been taken since).
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def decode_entry(member: str) -> tuple[str, list[Any], str]:
    """(task, args, queue) of a schedule member."""
    body = orjson.loads(member.partition("|")[2])
    return body["task"], body["args"], body["queue"]


class Scheduler:
    """Publishes due jobs; `run` loops until `stop()`, `tick` does one pass (for tests)."""

    def __init__(
        self, client: redis.Redis, publisher: CeleryPublisher, reconciler: Reconciler | None = None
    ) -> None:
        self.redis = client
        self.publisher = publisher
        self.reconciler = reconciler
        self._next_reconcile = 0.0
        self.token = uuid.uuid4().hex
        self._pop_due = client.register_script(POP_DUE)
        self._hold_lock = client.register_script(HOLD_LOCK)
        self._release_lock = client.register_script(RELEASE_LOCK)
        self._stopping = threading.Event()
        self._recovered = False

    def is_leader(self) -> bool:
        return bool(self._hold_lock(keys=[LOCK_KEY], args=[self.token, LOCK_TTL_MS]))

    def release(self) -> None:
        """Give the lock up if this scheduler holds it, so a standby takes over at its next
        poll rather than when the lock lapses (and no one reads a stopped one as running)."""
        try:
            self._release_lock(keys=[LOCK_KEY], args=[self.token])
        except redis.RedisError as exc:
            log.warning("scheduler: could not give the lock up (%s)", type(exc).__name__)

    def recover(self) -> int:
        """Republish jobs a dead scheduler popped but may not have published."""
        members = list(self.redis.hkeys(INFLIGHT_KEY))
        self._publish([m.decode() if isinstance(m, bytes) else str(m) for m in members])
        return len(members)

    def tick(self, now: int | None = None) -> int:
        """Publish every job due by `now`; returns how many."""
        due = self._pop_due(keys=[SCHEDULE_KEY, INFLIGHT_KEY], args=[now or now_ms(), BATCH])
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in due]
        self._publish(members)
        return len(members)

    def _publish(self, members: list[str]) -> None:
        if not members:
            return
        self.publisher.publish_many([decode_entry(m) for m in members])
        self.redis.hdel(INFLIGHT_KEY, *members)

    def run(self) -> None:
        """Loop: hold the lock, publish what is due, sleep briefly; give the lock up when
        stopped."""
        try:
            self._loop()
        finally:
            self.release()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.is_leader():
                    self._stopping.wait(1.0)
                    continue
                if not self._recovered:
                    count = self.recover()
                    self._recovered = True
                    if count:
                        log.info("scheduler republished %d in-flight jobs", count)
                while self.tick() >= BATCH:
                    pass
                self._maybe_reconcile()
            except redis.RedisError as exc:
                log.warning("scheduler: redis unavailable (%s); retrying", type(exc).__name__)
                self._recovered = False
                self._stopping.wait(1.0)
                continue
            self._stopping.wait(POLL_SECONDS)

    def _maybe_reconcile(self) -> None:
        if self.reconciler is None or time.monotonic() < self._next_reconcile:
            return
        self._next_reconcile = time.monotonic() + self.reconciler.config.interval
        self.reconciler.run_once()

    def stop(self) -> None:
        self._stopping.set()


def backlog(client: redis.Redis) -> int:
    """How many jobs wait in the schedule."""
    return int(client.zcard(SCHEDULE_KEY))


def build_scheduler(settings: Settings, config: ReconcilerConfig | None = None) -> Scheduler:
    """The scheduler of `smsq scheduler`, with its reconciler, on the configured Redis."""
    client = store_client(settings)
    publisher = CeleryPublisher(create_app(settings), client, direct=publishes_directly(settings))
    store = Store(store_client(settings, decode_responses=True))
    config = config or ReconcilerConfig.from_settings(settings)
    broker_url, sentinel_options = broker_for(settings)
    redelivery = Redelivery(broker_url, config.unacked_after, sentinel_options)
    return Scheduler(client, publisher, Reconciler(store, publisher, config, redelivery=redelivery))
