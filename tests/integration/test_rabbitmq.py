"""Scale-out on another broker: the same system with SMSQ_BROKER_URL pointing at RabbitMQ,
every lane a quorum queue."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from tests.integration.stack import Stack, running_stack

pytestmark = pytest.mark.integration

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
QUEUES = ("otp", "normal", "bulk", "dlr", "carrier-dlr")


def delete_lanes() -> None:
    """Delete the lane queues: leftovers would be consumed as ours, and a queue declared
    before as another type cannot be declared again as a quorum queue."""
    with Connection(RABBITMQ, connect_timeout=3) as connection:
        for queue in QUEUES:
            channel: Any = connection.channel()
            try:
                channel.queue_delete(queue)
            except Exception:  # noqa: BLE001 - no such queue: nothing to delete
                pass
            finally:
                channel.close()


def queue_types() -> dict[str, str]:
    """Every queue of the default virtual host and its type, as `rabbitmqctl` lists them."""
    listing = subprocess.run(
        ["rabbitmqctl", "list_queues", "--quiet", "--no-table-headers", "name", "type"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return dict(line.split("\t", 1) for line in listing.splitlines() if "\t" in line)


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
    delete_lanes()
    try:
        with running_stack(redis_server_url, broker_url=RABBITMQ, workers=2) as running:
            yield running
    finally:
        delete_lanes()  # the broker is shared: leave no queue of ours behind


class TestRabbitMQBroker:
    def test_messages_and_receipts_flow_through_rabbitmq(self, stack: Stack) -> None:
        """With RabbitMQ as broker (store still on Redis), 50 messages are delivered once each
        by two worker processes, and their receipts arrive."""
        # The session's Redis may hold what an earlier module's stopped workers left queued.
        queued_before = stack.redis.llen("normal")
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
        assert stack.redis.llen("normal") == queued_before  # nothing went through Redis lists

    @pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="no rabbitmqctl")
    def test_every_lane_is_a_quorum_queue(self, stack: Stack) -> None:
        """The workers and the API declared each lane as a quorum queue (replicated over the
        RabbitMQ cluster's nodes), not RabbitMQ's default classic queue."""
        types = queue_types()
        assert {queue: types.get(queue) for queue in QUEUES} == dict.fromkeys(QUEUES, "quorum")
