"""Scale-out on another broker: the same system with SMSQ_BROKER_URL pointing at RabbitMQ."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from tests.integration.stack import Stack, running_stack

pytestmark = pytest.mark.integration

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
QUEUES = ("otp", "normal", "bulk", "dlr", "carrier-dlr")


def rabbitmq_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(redis_server_url: str) -> Iterator[Stack]:
    if not rabbitmq_reachable():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    with Connection(RABBITMQ, connect_timeout=3) as connection:
        channel: Any = connection.channel()
        for queue in QUEUES:  # leftovers of earlier runs would be consumed as ours
            try:
                channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - the queue does not exist yet: nothing to purge
                channel = connection.channel()  # a failed purge closes the channel
    with running_stack(redis_server_url, broker_url=RABBITMQ, workers=2) as running:
        yield running


class TestRabbitMQBroker:
    def test_messages_and_receipts_flow_through_rabbitmq(self, stack: Stack) -> None:
        """With RabbitMQ as broker (store still on Redis), 50 messages are delivered once each
        by two worker processes, and their receipts arrive."""
        ids = []
        for i in range(50):
            reply = stack.send({
                "to": f"+4915112345{i:03d}", "content": f"via rabbit {i}", "dlr": True,
                "dlr-level": 3, "dlr-url": f"{stack.receiver_url}/rabbit",
            })  # fmt: skip
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["id"])
        for message_id in ids:
            stack.wait_status(message_id, {"delivered"}, timeout=60)
        stack.receiver.wait_for(100, timeout=60)
        refs = stack.sim_stats()["by_client_ref"]
        assert [refs.get(f"{m}:1") for m in ids] == [1] * 50
        assert stack.redis.llen("normal") == 0  # nothing went through Redis lists
