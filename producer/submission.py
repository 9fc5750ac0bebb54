"""Accepting messages: store first, then publish or schedule (API and library alike)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from worker.contract import SEND_MANY, SEND_SMS, MessageStatus, Priority, Queue
from worker.queueing import CeleryPublisher, schedule_at
from worker.store import Message, Store


def lane(message: Message) -> str:
    return Priority(message.priority).queue.value


Job = tuple[str, list[Any], str]  # (task, args, queue)


def _scheduled(message: Message) -> int | None:
    """When a scheduled message is due (ms), None when it is due now."""
    if message.status == MessageStatus.SCHEDULED and message.send_at is not None:
        return message.send_at
    return None


def send_jobs(messages: Sequence[Message], chunk: int = 1) -> list[tuple[int | None, Job]]:
    """The send tasks of `messages` with when each is due (None: now): one `sms.send` per
    message, or with `chunk` > 1 one `sms.send_many` per up to `chunk` ids of the same lane
    and due time (a lone id still goes alone, as `sms.send`). The OTP lane is never chunked:
    a code must not wait behind others."""
    groups: dict[tuple[str, int | None], list[str]] = {}
    for message in messages:
        groups.setdefault((lane(message), _scheduled(message)), []).append(message.id)
    jobs: list[tuple[int | None, Job]] = []
    for (queue, due), ids in groups.items():
        size = 1 if queue == Queue.OTP else max(1, chunk)
        for start in range(0, len(ids), size):
            part = ids[start : start + size]
            task: Job = (SEND_MANY, [part], queue) if len(part) > 1 else (SEND_SMS, part, queue)
            jobs.append((due, task))
    return jobs


def stage_messages(
    pipe: redis.client.Pipeline,
    store: Store,
    publisher: CeleryPublisher,
    messages: Sequence[Message],
    *,
    chunk: int = 1,
) -> list[Job]:
    """Queue on `pipe` the writes that store `messages` and queue (or schedule) their send
    tasks; returns the tasks to publish once the pipeline ran (a broker other than the store's
    Redis: see `accept_messages`)."""
    store.add_create_many(pipe, messages, "accepted")
    later: list[Job] = []
    for due, (task, args, queue) in send_jobs(messages, chunk):
        if due is not None:
            schedule_at(pipe, due, task, args, queue)
        elif not publisher.enqueue_in(pipe, task, args, queue):
            later.append((task, args, queue))
    return later


def accept_messages(
    store: Store, publisher: CeleryPublisher, messages: Sequence[Message], *, chunk: int = 1
) -> None:
    """Store messages (one pipelined transaction), then publish the due ones in one connection.

    With the broker on the same Redis, each message and its task are written in one MULTI/EXEC.
    With another broker, the store is written first, so a crash in between leaves a stored,
    unqueued message for the reconciler, never a queued message nobody can find.

    `chunk` > 1 (batch ingest): messages of one lane and due time travel up to `chunk` ids
    per task (`sms.send_many`); OTP and single sends keep one id per task (`chunk` 1).
    """
    pipe = store.redis.pipeline(transaction=True)
    later = stage_messages(pipe, store, publisher, messages, chunk=chunk)
    pipe.execute()  # with direct publishing: the messages and their tasks, atomically
    if later:
        publisher.publish_many(later)
