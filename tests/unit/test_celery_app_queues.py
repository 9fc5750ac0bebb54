"""On RabbitMQ every lane is a quorum queue with confirmed publishes; on Redis nothing changes."""

from __future__ import annotations

import pytest

from worker.celery_app import create_app, on_rabbitmq
from worker.contract import Queue
from worker.settings import Settings

REDIS = "redis://127.0.0.1:6379/0"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.mark.parametrize("url", [RABBITMQ, "amqps://h//", "pyamqp://h//", "AMQP://h//"])
def test_amqp_urls_are_rabbitmq(url: str) -> None:
    assert on_rabbitmq(url)


@pytest.mark.parametrize("url", [REDIS, "rediss://h/0", "sentinel://h:26379", "memory://"])
def test_other_urls_are_not(url: str) -> None:
    assert not on_rabbitmq(url)


def test_every_lane_is_a_durable_quorum_queue_on_rabbitmq() -> None:
    app = create_app(Settings(redis_url=REDIS, broker_url=RABBITMQ))
    for lane in Queue:
        queue = app.amqp.queues[lane.value]
        assert queue.queue_arguments == {"x-queue-type": "quorum"}, lane  # no x-max-priority
        assert queue.durable
        assert not queue.auto_delete
        assert not queue.exclusive
    assert app.conf.broker_transport_options["confirm_publish"] is True


def test_a_queue_created_on_first_use_is_a_quorum_queue_too() -> None:
    app = create_app(Settings(redis_url=REDIS, broker_url=RABBITMQ))
    assert app.amqp.queues["noop"].queue_arguments == {"x-queue-type": "quorum"}


def test_redis_queues_are_left_as_they_were() -> None:
    app = create_app(Settings(redis_url=REDIS))
    assert not app.amqp.queues[Queue.NORMAL.value].queue_arguments
    assert "confirm_publish" not in app.conf.broker_transport_options
