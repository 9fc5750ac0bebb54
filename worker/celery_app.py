"""The Celery application and every Celery setting, in one place.

The settings that keep messages safe on Redis (docs/reliability.md §8): late acks plus
reject-on-worker-lost, so a killed worker's task runs again; a visibility timeout far longer than
any countdown we use (we use none beyond `MAX_COUNTDOWN_SECONDS`; longer delays go through the
durable scheduler) and longer than any task can run (carrier and receipt timeouts are seconds).

A publish runs once (no `retry_on_timeout` for kombu's Redis connections, no
`task_publish_retry`): when the broker's reply to an LPUSH is lost, publishing again would queue
the task twice. The error reaches the caller; a task lost that way is published again by the
reconciler, from the store's watch lists (docs/reliability.md, "When a Redis reply is lost").

On RabbitMQ (an `amqp://` broker) every lane is a quorum queue, replicated over the cluster's
nodes, and publishes wait for the broker's confirm (docs/scaling.md). smsq's queues use nothing
quorum queues lack: no priorities, none auto-deleted or exclusive.
"""

from __future__ import annotations

from celery import Celery

from worker.contract import (
    DRAIN_CARRIER_RECEIPTS,
    DRAIN_RECEIPTS,
    FLUSH_MO_PARTS,
    HANDLE_CARRIER_RECEIPT,
    POST_RECEIPT,
    ROUTE_MO,
    SEND_MANY,
    SEND_SMS,
    Queue,
)
from worker.redis_urls import broker_for
from worker.settings import Settings, get_settings

# Every delay longer than this goes through the durable scheduler, never a Celery countdown.
MAX_COUNTDOWN_SECONDS = 5
# Redeliver an unacknowledged task only after this long: far above every countdown and runtime.
VISIBILITY_TIMEOUT_SECONDS = 3600
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def on_rabbitmq(broker_url: str) -> bool:
    """True for a RabbitMQ broker URL (`amqp://`, `amqps://`, `pyamqp://`)."""
    return broker_url.partition("://")[0].lower() in AMQP_SCHEMES


def rabbitmq_settings() -> dict[str, object]:
    """Celery settings for RabbitMQ: every queue, named or created on first use, a quorum
    queue (`x-queue-type`); Celery then consumes with per-consumer prefetch, which quorum queues
    need (`worker_detect_quorum_queues`, on by default)."""
    return {"task_default_queue_type": "quorum", "task_create_missing_queue_type": "quorum"}


def create_app(settings: Settings | None = None, *, with_tasks: bool = False) -> Celery:
    """A Celery app for smsq; `with_tasks` imports the task module (workers only)."""
    settings = settings or get_settings()
    broker_url, sentinel_options = broker_for(settings)  # Redis Sentinel: kombu's own form
    app = Celery(
        "smsq",
        broker=broker_url,
        include=["worker.tasks"] if with_tasks else [],
    )
    transport_options: dict[str, object] = {
        "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
        "socket_keepalive": True,
        "health_check_interval": 25,
        **sentinel_options,
    }
    rabbitmq = on_rabbitmq(broker_url)
    if rabbitmq:  # a publish returns once a majority of the queue's replicas hold it, or raises
        transport_options["confirm_publish"] = True
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=4,
        task_publish_retry=False,
        broker_transport_options=transport_options,
        visibility_timeout=VISIBILITY_TIMEOUT_SECONDS,
        broker_connection_retry_on_startup=True,
        broker_channel_error_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_default_queue=Queue.NORMAL.value,
        task_create_missing_queues=True,
        task_routes={
            SEND_SMS: {"queue": Queue.NORMAL.value},
            SEND_MANY: {"queue": Queue.NORMAL.value},
            POST_RECEIPT: {"queue": Queue.DLR.value},
            DRAIN_RECEIPTS: {"queue": Queue.DLR.value},
            HANDLE_CARRIER_RECEIPT: {"queue": Queue.CARRIER_DLR.value},
            FLUSH_MO_PARTS: {"queue": Queue.CARRIER_DLR.value},
            ROUTE_MO: {"queue": Queue.DLR.value},
            DRAIN_CARRIER_RECEIPTS: {"queue": Queue.CARRIER_DLR.value},
        },
    )
    if rabbitmq:
        app.conf.update(rabbitmq_settings())
    return app
