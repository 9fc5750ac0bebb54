"""Receipts to the client: retries through the scheduler, dead letters, replay, the history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import fakeredis
import pytest

from producer.views import message_view
from tests.unit.test_sending import Publisher
from worker.callbacks import CallbackSender
from worker.clock import now_ms
from worker.contract import POST_RECEIPT
from worker.errors import WebhookError, WebhookGoneError, WebhookUnavailableError
from worker.keys import KeyStore
from worker.receipts import RETRY_SCHEDULE_SECONDS, ReceiptDeliverer, dead_letters, replay
from worker.store import RECEIPT_WATCH_KEY, Message, Store, new_message_id


class ScriptedClient(CallbackSender):
    """Answers each delivery with the next scripted outcome (an error, or 200)."""

    def __init__(self, *outcomes: WebhookError | None) -> None:
        super().__init__()
        self.outcomes = list(outcomes)
        self.payloads: list[Mapping[str, object]] = []

    def send(
        self,
        url: str,
        method: Literal["GET", "POST"],
        payload: Mapping[str, object],
        *,
        event_id: str,
        secrets: Sequence[str],
        timestamp: int | None = None,
    ) -> int:
        self.payloads.append(payload)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return 200


class World:
    def __init__(self, *outcomes: WebhookError | None) -> None:
        client = fakeredis.FakeRedis(decode_responses=True)
        self.store = Store(client)
        self.keys = KeyStore(client)
        self.key = self.keys.create("t").key
        self.publisher = Publisher()
        self.client = ScriptedClient(*outcomes)
        self.deliverer = ReceiptDeliverer(self.store, self.keys, self.client, self.publisher)

    def opened(self) -> Message:
        message = Message(
            id=new_message_id(), to="+14155552671", sender="smsq", content="hi", segments=1,
            dlr=True, dlr_level=1, dlr_url="https://client.test/r", key_id=self.key.id,
        )  # fmt: skip
        self.store.create(message)
        self.store.open_receipt(message.id, 1)
        return message

    def view(self, message_id: str) -> dict[str, Any]:
        return message_view(self.store, self.store.fields(message_id))


def unavailable() -> WebhookUnavailableError:
    return WebhookUnavailableError("503", status_code=503)


class TestRetries:
    def test_a_failed_attempt_is_retried_later_and_cannot_be_overtaken(self) -> None:
        """A 503 schedules the retry durably; the receipt refuses an earlier claim meanwhile."""
        world = World(unavailable())
        message = world.opened()
        outcome = world.deliverer.deliver(message.id, 1)
        assert (outcome.result, outcome.status_code) == ("retry", 503)
        assert outcome.retry_in is not None
        assert outcome.retry_in >= RETRY_SCHEDULE_SECONDS[0] * 0.8
        assert world.deliverer.deliver(message.id, 1).result == "skipped"
        due = world.store.redis.zscore(RECEIPT_WATCH_KEY, f"{message.id}:1")
        assert due is not None
        assert due > now_ms() + 3000

    def test_gone_stops_at_once(self) -> None:
        """A 410 closes the receipt for good: no retry, no dead letter."""
        world = World(WebhookGoneError("gone", status_code=410))
        message = world.opened()
        assert world.deliverer.deliver(message.id, 1).result == "gone"
        assert dead_letters(world.store) == []
        assert world.store.redis.zscore(RECEIPT_WATCH_KEY, f"{message.id}:1") is None

    def test_after_the_last_attempt_the_receipt_is_dead_lettered(self) -> None:
        """When the schedule is used up, the receipt goes to the dead letters, counted."""
        world = World(*[unavailable()] * (len(RETRY_SCHEDULE_SECONDS) + 1))
        message = world.opened()
        world.store.redis.hset(
            f"smsq:msg:{message.id}", "rcpt:1:attempts", len(RETRY_SCHEDULE_SECONDS)
        )
        assert world.deliverer.deliver(message.id, 1).result == "dead"
        assert dead_letters(world.store) == [f"{message.id}:1"]
        assert world.store.counters() == {"receipt_dead": 1}


class TestReplay:
    def test_a_replayed_receipt_gets_a_fresh_schedule_and_the_same_event(self) -> None:
        """Replay after death: same event id and seq, attempts numbered on, retried again."""
        world = World(*[unavailable()] * (len(RETRY_SCHEDULE_SECONDS) + 1))
        message = world.opened()
        world.store.redis.hset(
            f"smsq:msg:{message.id}", "rcpt:1:attempts", len(RETRY_SCHEDULE_SECONDS)
        )
        world.deliverer.deliver(message.id, 1)
        assert replay(world.store, world.publisher, dead_letters(world.store)) == 1
        assert world.publisher.now == [(POST_RECEIPT, [message.id, 1], "dlr")]
        world.client.outcomes = [unavailable()]
        assert world.deliverer.deliver(message.id, 1).result == "retry"
        first, second = world.client.payloads
        assert (first["event_id"], first["seq"]) == (second["event_id"], second["seq"])
        assert (first["attempt"], second["attempt"]) == (11, 12)


class TestHistory:
    @pytest.mark.parametrize("answers", [[None], [unavailable(), None]])
    def test_get_shows_every_attempt(self, answers: list[WebhookError | None]) -> None:
        """GET /sms/{id} lists each delivery attempt of a receipt with its outcome."""
        world = World(*answers)
        message = world.opened()
        for _ in answers:
            world.store.redis.hset(f"smsq:msg:{message.id}", "rcpt:1:not_before", 0)
            world.deliverer.deliver(message.id, 1)
        history = world.view(message.id)["receipts"]["1"]["history"]
        expected = [("WebhookUnavailableError", 503)] * (len(answers) - 1) + [("sent", 200)]
        assert [(h["result"], h["status_code"]) for h in history] == expected
        assert [h["attempt"] for h in history] == list(range(1, len(answers) + 1))
