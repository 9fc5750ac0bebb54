"""Publishing tasks by name: now (Celery) or later (the durable scheduler's sorted set)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import redis
from celery import Celery

from worker.clock import now_ms

SCHEDULE_KEY = "smsq:schedule"
INFLIGHT_KEY = "smsq:schedule:inflight"


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
    """Publishes through a Celery app by task name (never importing the tasks)."""

    def __init__(self, app: Celery, client: redis.Redis) -> None:
        self.app = app
        self.redis = client

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.app.send_task(task, args=list(args), queue=queue)

    def publish_many(self, jobs: Sequence[tuple[str, Sequence[Any], str]]) -> None:
        """Publish several jobs over one producer connection."""
        with self.app.producer_or_acquire() as producer:
            for task, args, queue in jobs:
                self.app.send_task(task, args=list(args), queue=queue, producer=producer)

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        schedule_at(self.redis, now_ms() + int(delay * 1000), task, args, queue)
