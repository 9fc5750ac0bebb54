"""Campaigns, scheduling and lanes against the real system (real Redis, workers, simulator)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from standardwebhooks.webhooks import Webhook

from producer.submission import accept_messages
from tests.integration.stack import Stack, running_stack, wait_for, worker_stats
from worker.celery_app import create_app as create_celery_app
from worker.contract import SEND_MANY, SEND_SMS
from worker.queueing import CeleryPublisher
from worker.settings import Settings
from worker.simulator import SimulatorConfig
from worker.store import Message, Store, new_message_id

pytestmark = pytest.mark.integration

NUMBERS = [f"+1415555{n:04d}" for n in range(2000, 4000)]


@pytest.fixture(scope="module")
def stack(redis_server_url: str) -> Iterator[Stack]:
    # Bulk drains slowly (4 threads, 10 ms carrier latency); OTPs have their own worker.
    with running_stack(
        redis_server_url,
        sim=SimulatorConfig(receipt_delay=0.05, latency_ms=10),
        worker_queues=["bulk", "otp", "normal,dlr,carrier-dlr"],
        concurrency=4,
    ) as running:
        yield running


def batch_status(stack: Stack, batch_id: str) -> dict[str, Any]:
    result: dict[str, Any] = stack.http.get(f"{stack.api_url}/sms/batch/{batch_id}").json()
    return result


def send_tasks_run(stack: Stack) -> int:
    """Send tasks (`sms.send`, `sms.send_many`) the workers ran so far (remote control)."""
    stats = worker_stats(Settings(redis_url=stack.redis_url), len(stack.workers))
    return sum(
        s.get("total", {}).get(SEND_SMS, 0) + s.get("total", {}).get(SEND_MANY, 0)
        for s in stats.values()
    )


def submitted_at(stack: Stack, message_id: str) -> int:
    return int(stack.redis.hget(f"smsq:msg:{message_id}", "submitted_at") or 0)


class TestBatch:
    def test_templated_batch_reaches_the_carrier_once_each_and_counters_add_up(
        self, stack: Stack
    ) -> None:
        """A 1,500-recipient batch: each recipient once at the carrier, rendered, counted."""
        recipients = [{"to": n, "vars": {"name": f"N{i}"}} for i, n in enumerate(NUMBERS[:1500])]
        recipients.append({"to": "+1", "vars": {"name": "bad"}})
        recipients.append({"to": NUMBERS[1600], "vars": {}})  # no {name}
        reply = stack.http.post(
            f"{stack.api_url}/sms/batch",
            json={"content": "Hi {name}, your order shipped", "recipients": recipients},
        )
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert body["accepted"] == 1500
        assert [(r["index"], r["error"]["field"]) for r in body["rejected"]] == [
            (1500, "to"), (1501, "vars.name"),
        ]  # fmt: skip
        status = wait_for(
            lambda: (s := batch_status(stack, body["id"]))["done"] and s, 90, "batch not done"
        )
        assert (status["accepted"], status["delivered"], status["rejected"]) == (1500, 1500, 2)
        stats = stack.sim_stats()
        texts = {m["text"] for m in stats["messages"]}
        assert all(f"Hi N{i}, your order shipped" in texts for i in range(1500))
        assert stats["duplicates"] == []

    def test_cancel_stops_what_is_not_yet_submitted(self, stack: Stack) -> None:
        """Cancelling a scheduled batch: nothing of it is ever submitted."""
        at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
        reply = stack.http.post(
            f"{stack.api_url}/sms/batch",
            json={"content": "later", "recipients": NUMBERS[:200], "send_at": at},
        ).json()
        cancelled = stack.http.delete(f"{stack.api_url}/sms/batch/{reply['id']}").json()
        assert cancelled["cancelled"] == 200
        time.sleep(4)  # past the due time: the scheduler fires, the workers must skip them
        status = batch_status(stack, reply["id"])
        assert (status["cancelled"], status["submitted"], status["delivered"]) == (200, 0, 0)

    def test_a_cancelled_message_sends_its_receipt(self, stack: Stack) -> None:
        """DELETE /sms/{id} of a scheduled message that asked for receipts: its level-1
        receipt says `cancelled` / `DELETED`, signed, and nothing is ever submitted."""
        at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = {"to": "+14155550199", "content": "later", "send_at": at, "dlr-level": 3,
                "dlr-url": f"{stack.receiver_url}/cancelled"}  # fmt: skip
        message_id = stack.send(body).json()["id"]
        assert stack.http.delete(f"{stack.api_url}/sms/{message_id}").status_code == 200
        arrived = wait_for(
            lambda: [r for r in stack.receiver.snapshot() if r.path == "/cancelled"], 30,
            "no receipt for the cancelled message",
        )  # fmt: skip
        (receipt,) = (r.json() for r in arrived)
        assert (receipt["id"], receipt["level"]) == (message_id, 1)
        assert (receipt["status"], receipt["message_status"]) == ("cancelled", "DELETED")
        assert receipt["segments"]["accepted"] == 0

    def test_idempotent_replay_sends_nothing(self, stack: Stack) -> None:
        """The same batch with the same Idempotency-Key is accepted once."""
        body = {"content": "once", "recipients": NUMBERS[1800:1810]}
        headers = {"Idempotency-Key": "campaign-42"}
        first = stack.http.post(f"{stack.api_url}/sms/batch", json=body, headers=headers)
        second = stack.http.post(f"{stack.api_url}/sms/batch", json=body, headers=headers)
        assert first.json() == second.json()
        wait_for(lambda: batch_status(stack, first.json()["id"])["done"], 30, "not done")
        ids = set(stack.redis.lrange(f"smsq:batch:{first.json()['id']}:ids", 0, -1))
        refs = stack.sim_stats()["by_client_ref"]
        assert len(ids) == 10
        assert sorted(count for ref, count in refs.items() if ref.split(":")[0] in ids) == [1] * 10

    def test_a_batch_travels_in_chunks_and_each_reference_goes_once(self, stack: Stack) -> None:
        """200 recipients: at most ceil(200/16) send tasks ran (`sms.send_many`), and the
        simulator saw each message's reference exactly once."""
        before = send_tasks_run(stack)
        body = {"content": "chunked", "recipients": NUMBERS[1900:2000] + NUMBERS[100:200]}
        reply = stack.http.post(f"{stack.api_url}/sms/batch", json=body).json()
        assert reply["accepted"] == 200
        wait_for(lambda: batch_status(stack, reply["id"])["done"], 60, "not done")
        ids = set(cast(list[str], stack.redis.lrange(f"smsq:batch:{reply['id']}:ids", 0, -1)))
        refs = stack.sim_stats()["by_client_ref"]
        assert len(ids) == 200
        assert {ref: n for ref, n in refs.items() if ref.split(":")[0] in ids} == {
            f"{message_id}:1": 1 for message_id in ids
        }
        ran = send_tasks_run(stack) - before
        assert 0 < ran <= math.ceil(200 / 16)

    def test_batch_callback_gets_progress_and_one_signed_completion(self, stack: Stack) -> None:
        """A batch_callback_url hears progress, then exactly one signed batch.completed."""
        reply = stack.http.post(
            f"{stack.api_url}/sms/batch",
            json={
                "content": "cb",
                "recipients": NUMBERS[1700:1750],
                "batch_callback_url": f"{stack.receiver_url}/batches",
            },
        ).json()

        def completions() -> list[Any]:
            return [
                r
                for r in stack.receiver.snapshot()
                if r.path == "/batches" and r.json()["batch"]["id"] == reply["id"]
            ]

        wait_for(
            lambda: any(r.json()["type"] == "batch.completed" for r in completions()),
            60,
            "no batch.completed event",
        )
        time.sleep(2)  # a second completion would arrive within a watcher cycle
        events = completions()
        done = [r for r in events if r.json()["type"] == "batch.completed"]
        assert len(done) == 1
        assert done[0].json()["batch"]["delivered"] == 50
        Webhook(stack.key.webhook_secret).verify(done[0].body, done[0].headers)


class TestScheduling:
    def test_scheduled_send_fires_once_after_its_time(self, stack: Stack) -> None:
        """A send_at two seconds ahead is submitted once, not before its time."""
        at = datetime.now(UTC) + timedelta(seconds=2)
        reply = stack.send({"to": NUMBERS[1900], "content": "at two", "send_at": at.isoformat()})
        assert reply.json()["status"] == "scheduled"
        message = stack.wait_status(reply.json()["id"], {"delivered"}, timeout=30)
        assert submitted_at(stack, message["id"]) >= int(at.timestamp() * 1000)
        assert stack.sim_stats()["by_client_ref"][f"{message['id']}:1"] == 1

    def test_expired_message_is_never_submitted(self, stack: Stack, redis_server_url: str) -> None:
        """A message whose validity ran out while queued ends expired, never at the carrier."""
        store = Store(stack.redis)
        message = Message(
            id=new_message_id(), to=NUMBERS[1950], sender="smsq", content="too late",
            segments=1, key_id=stack.key.key.id, validity_until=int(time.time() * 1000) - 1,
        )  # fmt: skip
        settings = Settings(redis_url=redis_server_url)
        accept_messages(store, CeleryPublisher(create_celery_app(settings), stack.redis), [message])
        assert stack.wait_status(message.id, {"expired"})["segments"][0]["carrier_id"] is None
        assert f"{message.id}:1" not in stack.sim_stats()["by_client_ref"]


class TestLanes:
    def test_otp_overtakes_a_bulk_backlog(self, stack: Stack) -> None:
        """An OTP sent behind 1,000 queued bulk messages is submitted before most of them."""
        bulk = stack.http.post(
            f"{stack.api_url}/sms/batch", json={"content": "promo", "recipients": NUMBERS[:1000]}
        ).json()
        otp = stack.send({"to": NUMBERS[1999], "content": "Your code is 424242", "priority": "otp"})
        otp_message = stack.wait_status(otp.json()["id"], {"delivered", "accepted"}, timeout=30)
        otp_at = submitted_at(stack, otp_message["id"])
        ids = cast(list[str], stack.redis.lrange(f"smsq:batch:{bulk['id']}:ids", 0, -1))
        wait_for(lambda: batch_status(stack, bulk["id"])["done"], 120, "bulk not done")
        before = len([i for i in ids if submitted_at(stack, i) <= otp_at])
        assert before < len(ids) // 2, f"{before} of {len(ids)} bulk messages went first"
