"""Accepting messages: store first, then publish or schedule (API and library alike)."""

from __future__ import annotations

from collections.abc import Sequence

from worker.contract import SEND_SMS, MessageStatus, Priority
from worker.queueing import CeleryPublisher, schedule_at
from worker.store import Message, Store


def lane(message: Message) -> str:
    return Priority(message.priority).queue.value


def accept_messages(store: Store, publisher: CeleryPublisher, messages: Sequence[Message]) -> None:
    """Store messages (one pipelined transaction), then publish the due ones in one connection.

    With the broker on the same Redis, each message and its task are written in one MULTI/EXEC.
    With another broker, the store is written first, so a crash in between leaves a stored,
    unqueued message for the reconciler, never a queued message nobody can find.
    """
    pipe = store.redis.pipeline(transaction=True)
    due = []
    for message in messages:
        store.add_create(pipe, message, "accepted")
        if message.status == MessageStatus.SCHEDULED and message.send_at is not None:
            schedule_at(pipe, message.send_at, SEND_SMS, [message.id], lane(message))
        elif not publisher.enqueue_in(pipe, SEND_SMS, [message.id], lane(message)):
            due.append((SEND_SMS, [message.id], lane(message)))
    pipe.execute()  # with direct publishing: the message and its task, atomically
    if due:
        publisher.publish_many(due)
