"""Publishing tasks by name: now (Celery) or later (the durable scheduler's sorted set)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import redis
from celery import Celery

from worker.clock import now_ms
from worker.envelope import enqueue
from worker.settings import Settings
from worker.store.keys import SCHEDULE_KEY as SCHEDULE_KEY


class Publisher(Protocol):
    """What the sending and receipt logic needs to hand work on."""

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None: ...

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None: ...


def schedule_entry(task: str, args: Sequence[Any], queue: str) -> str:
    """A sorted-set member: `{uuid}|{json}` (the uuid keeps equal jobs distinct)."""
    body = orjson.dumps({"task": task, "args": list(args), "queue": queue}).decode()
    return f"{uuid.uuid4().hex}|{body}"


def schedule_at(
    client: redis.Redis | redis.client.Pipeline,
    due_ms: int,
    task: str,
    args: Sequence[Any],
    queue: str,
) -> None:
    """Add a job to the durable schedule; the scheduler publishes it when due."""
    client.zadd(SCHEDULE_KEY, {schedule_entry(task, args, queue): due_ms})


class CeleryPublisher:
    """Publishes tasks by name (never importing them).

    `direct`: the broker is the store's Redis, so tasks are written straight into their queue
    lists (`worker.envelope`) — in the caller's pipeline when there is one. Otherwise (another
    broker, e.g. RabbitMQ) they go through Celery.
    """

    def __init__(self, app: Celery, client: redis.Redis, *, direct: bool = False) -> None:
        self.app = app
        self.redis = client
        self.direct = direct

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        if self.direct:
            enqueue(self.redis, task, args, queue)
        else:
            self.app.send_task(task, args=list(args), queue=queue)

    def publish_many(self, jobs: Sequence[tuple[str, Sequence[Any], str]]) -> None:
        """Publish several jobs in one round trip (direct) or over one producer connection."""
        if self.direct:
            pipe = self.redis.pipeline(transaction=False)
            for task, args, queue in jobs:
                enqueue(pipe, task, args, queue)
            pipe.execute()
            return
        with self.app.producer_or_acquire() as producer:
            for task, args, queue in jobs:
                self.app.send_task(task, args=list(args), queue=queue, producer=producer)

    def enqueue_in(
        self, pipe: redis.client.Pipeline, task: str, args: Sequence[Any], queue: str
    ) -> bool:
        """Queue the task inside `pipe` when publishing is direct; False if the caller must
        publish it after the pipeline ran."""
        if self.direct:
            enqueue(pipe, task, args, queue)
        return self.direct

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        schedule_at(self.redis, now_ms() + int(delay * 1000), task, args, queue)


def publishes_directly(settings: Settings) -> bool:
    """True when the broker is the store's own Redis (no separate SMSQ_BROKER_URL)."""
    return settings.broker_url in (None, "", settings.redis_url)
