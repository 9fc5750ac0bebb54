"""The durable scheduler: moves due jobs from a Redis sorted set to their Celery queues.

Everything delayed by more than a few seconds (scheduled sends, carrier retry backoff, receipt
retries) is a member of `smsq:schedule` scored by its due time in ms, so it survives restarts of
every process and costs no worker memory. `POP_DUE` moves due members atomically into an
in-flight hash before they are published and removes them after; a scheduler that dies in
between, or loses Redis's reply, republishes them when it (or another) starts, so nothing is
lost. When the broker is the store's Redis, publishing a job and removing it from the in-flight
hash are one MULTI/EXEC, so a job is published exactly once; with a broker of its own, at worst
a job is published twice, and every task is idempotent. A lock lets several schedulers run for
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
from worker.queueing import CeleryPublisher, publishes_directly
from worker.reconciler import Reconciler, ReconcilerConfig
from worker.redelivery import Redelivery
from worker.redis_urls import broker_for, store_client
from worker.settings import Settings
from worker.store import Store, lua_scripts
from worker.store.keys import SCHEDULE_INFLIGHT_KEY, SCHEDULE_KEY, SCHEDULER_LOCK_KEY

log = logging.getLogger(__name__)

LOCK_KEY = SCHEDULER_LOCK_KEY
LOCK_TTL_MS = 10_000
BATCH = 1000
POLL_SECONDS = 0.1

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
        self._pop_due = lua_scripts.register(client, "schedule_pop_due", with_prelude=False)
        self._hold_lock = lua_scripts.register(
            client, "scheduler_hold_lock", with_prelude=False
        )
        self._release_lock = lua_scripts.register(
            client, "scheduler_release_lock", with_prelude=False
        )
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
        members = list(self.redis.hkeys(SCHEDULE_INFLIGHT_KEY))
        self._publish([m.decode() if isinstance(m, bytes) else str(m) for m in members])
        return len(members)

    def tick(self, now: int | None = None) -> int:
        """Publish every job due by `now`; returns how many."""
        keys = [SCHEDULE_KEY, SCHEDULE_INFLIGHT_KEY]
        due = self._pop_due(keys=keys, args=[now or now_ms(), BATCH])
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in due]
        self._publish(members)
        return len(members)

    def _publish(self, members: list[str]) -> None:
        """Publish in-flight jobs and forget them: both in one transaction when publishing is
        direct (a lost reply leaves both done or neither), else forgotten once published."""
        if not members:
            return
        pipe = self.redis.pipeline(transaction=True)
        jobs = [decode_entry(m) for m in members]
        elsewhere = [job for job in jobs if not self.publisher.enqueue_in(pipe, *job)]
        if elsewhere:
            self.publisher.publish_many(elsewhere)
        pipe.hdel(SCHEDULE_INFLIGHT_KEY, *members)
        pipe.execute()

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
