"""Batched client receipts (`dlr-batch`): grouping, size, order, failure, 410, recovery, API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import fakeredis
import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from producer.api import create_app
from producer.batches import expand, ingest
from producer.schemas import BatchRequest
from producer.services import Services
from producer.views import message_view
from tests.unit.fake_services import fake_services
from tests.unit.test_callbacks import mock_sender
from tests.unit.test_sending import Carrier, Publisher
from worker.clock import now_ms
from worker.contract import FLUSH_RECEIPTS, POST_RECEIPT
from worker.inbound import ReceiptIntake
from worker.keys import KeyStore
from worker.receipt_batches import (
    BatchConfig,
    ReceiptBatches,
    batching_deliverer,
    flag_key,
    group_key,
    list_key,
)
from worker.receipts import RETRY_SCHEDULE_SECONDS
from worker.reconciler import Reconciler
from worker.sending import Sender
from worker.settings import Settings
from worker.store import (
    DEAD_LETTER_KEY,
    RECEIPT_WATCH_KEY,
    SUBMIT_WATCH_KEY,
    Message,
    Store,
    new_message_id,
)

URL_A = "https://a.client.test/receipts"
URL_B = "https://b.client.test/receipts"
TO = "+14155552671"


class World:
    """A worker's receipt path on fakeredis; the client's server answers with `statuses`."""

    def __init__(self, *statuses: int, batch_max: int = 100) -> None:
        self.redis = fakeredis.FakeRedis(decode_responses=True)
        self.store = Store(self.redis)
        self.keys = KeyStore(self.redis)
        self.key = self.keys.create("tenant")
        self.publisher = Publisher()
        self.statuses = list(statuses)
        self.sender, self.requests = mock_sender(self._answer)
        settings = Settings(dlr_batch_max=batch_max, dlr_batch_window_ms=200)
        self.deliverer, self.flusher = batching_deliverer(
            self.store, self.keys, self.sender, self.publisher, settings
        )

    def _answer(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)

    def opened(self, url: str = URL_A, dlr_level: int = 1, batch: bool = True) -> Message:
        """A stored message whose receipts (each level `dlr_level` asks for) are open."""
        message = Message(
            id=new_message_id(), to=TO, sender="smsq", content="hi", segments=1, dlr=True,
            dlr_level=dlr_level, dlr_url=url, dlr_batch=batch, key_id=self.key.key.id,
        )  # fmt: skip
        self.store.create(message)
        for level in {1: (1,), 2: (2,), 3: (1, 2)}[dlr_level]:
            self.store.open_receipt(message.id, level)
        return message

    def publish_receipts(self, *messages: Message) -> None:
        for message in messages:
            for level in {1: (1,), 2: (2,), 3: (1, 2)}[message.dlr_level]:
                self.publisher.publish(POST_RECEIPT, [message.id, level], "dlr")

    def run(self) -> None:
        """Work like the dlr lane: every task published now, and every flush scheduled for the
        end of its window, until none is left (receipt retries stay scheduled)."""
        while jobs := self._due():
            for task, args in jobs:
                if task == POST_RECEIPT:
                    self.deliverer.deliver(args[0], int(args[1]))
                elif task == FLUSH_RECEIPTS:
                    self.flusher.flush(args[0])

    def _due(self) -> list[tuple[str, list[Any]]]:
        jobs = [(task, args) for task, args, _ in self.publisher.now]
        windows = [(t, a) for t, a, _, _ in self.publisher.later if t == FLUSH_RECEIPTS]
        self.publisher.now.clear()
        self.publisher.later[:] = [job for job in self.publisher.later if job[0] != FLUSH_RECEIPTS]
        return jobs + windows

    def bodies(self) -> list[list[dict[str, Any]]]:
        """The receipts of each POST that reached the client, in order."""
        return [orjson.loads(request.content)["receipts"] for request in self.requests]

    def state(self, message: Message, level: int = 1) -> str | None:
        value = self.redis.hget(f"smsq:msg:{message.id}", f"rcpt:{level}:state")
        return None if value is None else str(value)


class TestGrouping:
    def test_receipts_to_one_url_go_in_one_signed_post(self) -> None:
        """Five receipts to A and three to B: two POSTs, each `{"receipts": [...]}` under its
        own batch webhook-id, verifiable with the Standard Webhooks reference library."""
        world = World()
        to_a = [world.opened(URL_A) for _ in range(5)]
        to_b = [world.opened(URL_B) for _ in range(3)]
        world.publish_receipts(*to_a, *to_b)
        world.run()
        by_host = {request.headers["host"]: request for request in world.requests}
        assert sorted(by_host) == ["a.client.test", "b.client.test"]
        assert len(world.requests) == 2
        ids_a = [item["id"] for item in orjson.loads(by_host["a.client.test"].content)["receipts"]]
        assert ids_a == [m.id for m in to_a]
        for request in world.requests:
            verified = Webhook(world.key.webhook_secret).verify(
                request.content, dict(request.headers)
            )
            assert request.headers["webhook-id"].startswith("batch_")
            assert all(item["event_id"] == f"evt_{item['id']}_1" for item in verified["receipts"])
        assert all(world.state(m) == "sent" for m in to_a + to_b)
        assert world.redis.zcard(RECEIPT_WATCH_KEY) == 0

    def test_one_flush_per_window_and_a_full_batch_goes_at_once(self) -> None:
        """Seven receipts with a batch size of 3: one flush scheduled for the window, one
        published at once per full batch; POSTs of at most 3 receipts carry all seven once."""
        world = World(batch_max=3)
        messages = [world.opened() for _ in range(7)]
        for message in messages:
            world.deliverer.deliver(message.id, 1)
        windows = [job for job in world.publisher.later if job[0] == FLUSH_RECEIPTS]
        group = group_key(URL_A, world.key.key.id)
        assert [(job[3], job[1]) for job in windows] == [(0.2, [group])]
        assert [job[0] for job in world.publisher.now] == [FLUSH_RECEIPTS] * 2
        world.run()
        sizes = [len(body) for body in world.bodies()]
        assert max(sizes) <= 3
        sent = sorted(item["id"] for body in world.bodies() for item in body)
        assert sent == sorted(m.id for m in messages)
        assert not world.redis.exists(flag_key(group_key(URL_A, world.key.key.id)))

    def test_a_message_without_dlr_batch_is_sent_alone(self) -> None:
        """Without `dlr-batch` the receipt is the plain payload, signed under its event id."""
        world = World()
        message = world.opened(batch=False)
        assert world.deliverer.deliver(message.id, 1).result == "sent"
        (request,) = world.requests
        assert orjson.loads(request.content)["id"] == message.id
        assert request.headers["webhook-id"] == f"evt_{message.id}_1"

    def test_the_history_records_each_attempt_with_its_batch(self) -> None:
        """GET /sms/{id} shows the batched attempt like a single one (and the batch's id)."""
        world = World()
        message = world.opened()
        world.publish_receipts(message)
        world.run()
        view = message_view(world.store, world.store.fields(message.id))
        (attempt,) = view["receipts"]["1"]["history"]
        assert (attempt["result"], attempt["status_code"], attempt["attempt"]) == ("sent", 200, 1)
        event = next(e for e in view["events"] if e["event"] == "receipt_sent")
        assert event["batch"] == world.requests[0].headers["webhook-id"]


class TestOrder:
    def test_level_two_goes_in_a_later_post_after_level_one(self) -> None:
        """Both levels of a level-3 message wait in one batch: level 2 parks, is released by
        level 1's close, and comes back through the batch path in the next POST."""
        world = World()
        message = world.opened(dlr_level=3)
        world.publish_receipts(message)
        world.run()
        first, second = world.bodies()
        assert [(r["id"], r["level"]) for r in first] == [(message.id, 1)]
        assert [(r["id"], r["level"]) for r in second] == [(message.id, 2)]
        assert first[0]["seq"] < second[0]["seq"]
        assert world.requests[1].headers["webhook-id"].startswith("batch_")


class TestFailure:
    def test_a_failed_post_releases_each_receipt_and_retries_it_durably(self) -> None:
        """A 503 for the batch: every receipt is open again, due later, its retry scheduled on
        the receipt schedule; when due, the retries are batched again and sent."""
        world = World(503)
        messages = [world.opened() for _ in range(3)]
        world.publish_receipts(*messages)
        world.run()
        retries = world.publisher.later
        assert sorted(args[0] for _, args, _, _ in retries) == sorted(m.id for m in messages)
        assert all(delay >= RETRY_SCHEDULE_SECONDS[0] * 0.8 for *_, delay in retries)
        assert all(world.state(m) == "open" for m in messages)
        due = [world.redis.zscore(RECEIPT_WATCH_KEY, f"{m.id}:1") for m in messages]
        assert all(score is not None and score > now_ms() + 3000 for score in due)
        for message in messages:  # the retry is due now
            world.redis.hset(f"smsq:msg:{message.id}", "rcpt:1:not_before", 0)
        world.publisher.later.clear()
        world.publish_receipts(*messages)
        world.run()
        first, second = world.bodies()
        assert [r["attempt"] for r in first] == [1, 1, 1]
        assert [r["attempt"] for r in second] == [2, 2, 2]
        assert [r["event_id"] for r in first] == [r["event_id"] for r in second]
        assert all(world.state(m) == "sent" for m in messages)

    def test_gone_closes_every_receipt_of_the_batch(self) -> None:
        """A 410 for the batch stops each receipt at once: gone, no retry, no dead letter."""
        world = World(410)
        messages = [world.opened() for _ in range(2)]
        world.publish_receipts(*messages)
        world.run()
        assert all(world.state(m) == "gone" for m in messages)
        assert world.publisher.later == []
        assert world.redis.zcard(DEAD_LETTER_KEY) == 0
        assert world.redis.zcard(RECEIPT_WATCH_KEY) == 0


class TestRecovery:
    def test_a_lost_flush_strands_nothing(self) -> None:
        """The flush is lost: the receipt stays watched, the reconciler republishes it, and it
        is sent once (the duplicate list entry finds it done)."""
        world = World()
        message = world.opened()
        world.deliverer.deliver(message.id, 1)
        world.publisher.later.clear()  # the scheduled flush never runs
        world.redis.delete(flag_key(group_key(URL_A, world.key.key.id)))  # its window expired
        assert world.redis.zscore(RECEIPT_WATCH_KEY, f"{message.id}:1") is not None
        world.redis.delete(SUBMIT_WATCH_KEY)  # only the receipt is the reconciler's business
        reconciler = Reconciler(world.store, world.publisher, clock=lambda: now_ms() + 600_000)
        assert reconciler.run_once().counts == {"republished_receipt": 1}
        world.run()
        (body,) = world.bodies()
        assert [r["id"] for r in body] == [message.id]
        assert world.state(message) == "sent"
        assert world.redis.llen(list_key(group_key(URL_A, world.key.key.id))) == 0


@pytest.fixture
def services() -> Services:
    return fake_services()


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    key = services.keys.create("unit").api_key
    app = create_app(services=services)
    with TestClient(app, headers={"authorization": f"Bearer {key}"}) as client:
        yield client


def send(api: TestClient, **body: Any) -> Any:
    base = {"to": TO, "content": "hi", "dlr": True, "dlr-url": URL_A, "dlr-batch": True}
    return api.post("/sms/send", json={**base, **body})


class TestApi:
    def test_get_with_dlr_batch_is_refused_naming_the_field(self, api: TestClient) -> None:
        """A batch of receipts is a JSON body: GET with dlr-batch is a 422 on `dlr-batch`."""
        reply = send(api, **{"dlr-method": "GET"})
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["field"] == "dlr-batch"

    @pytest.mark.parametrize(("given", "stored"), [(True, "1"), (False, None)])
    def test_dlr_batch_is_stored_with_the_message(
        self, api: TestClient, services: Services, given: bool, stored: str | None
    ) -> None:
        """`dlr-batch` is kept on the message (absent when false, the default)."""
        reply = send(api, **{"dlr-batch": given})
        assert reply.status_code == 202, reply.text
        assert services.redis.hget(f"smsq:msg:{reply.json()['id']}", "dlr_batch") == stored

    def test_batch_messages_may_ask_for_dlr_batch(self, services: Services) -> None:
        """A `/sms/batch` message with dlr-batch is stored with it; with GET it is rejected."""
        request = BatchRequest.model_validate(
            {
                "messages": [
                    {"to": TO, "content": "a", "dlr-batch": True},
                    {"to": TO, "content": "b", "dlr-batch": True, "dlr-method": "GET"},
                ],
                "dlr": True,
                "dlr-url": URL_A,
            }
        )
        result = ingest(
            services.store, services.publisher, services.settings, expand(request),
            key_id="k1", batch_id="b1",
        )  # fmt: skip
        (accepted,) = result.accepted
        assert services.redis.hget(f"smsq:msg:{accepted}", "dlr_batch") == "1"
        (rejected,) = result.rejected
        assert (rejected["index"], rejected["error"]["field"]) == (1, "dlr-batch")

    def test_a_whole_batch_may_ask_for_dlr_batch(self, api: TestClient, services: Services) -> None:
        """`dlr-batch` at the top of `/sms/batch` applies to every message; with GET it is one
        422 on the field for the whole batch."""
        body = {"content": "hi", "recipients": [TO, TO], "dlr": True, "dlr-url": URL_A}
        reply = api.post("/sms/batch", json={**body, "dlr-batch": True})
        assert reply.status_code == 202, reply.text
        ids = cast(list[str], services.redis.lrange(f"smsq:batch:{reply.json()['id']}:ids", 0, -1))
        assert len(ids) == 2
        assert [services.redis.hget(f"smsq:msg:{i}", "dlr_batch") for i in ids] == ["1", "1"]
        refused = api.post("/sms/batch", json={**body, "dlr-batch": True, "dlr-method": "GET"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "dlr-batch"


class TestStraightFromTheSender:
    """The send worker puts a `dlr-batch` receipt straight into its batch: no `sms.dlr.post`
    task per receipt; any other receipt is published as before."""

    def test_a_batched_receipt_skips_its_task(self) -> None:
        world = World()
        batches = ReceiptBatches(world.store, world.publisher, BatchConfig(100, 200))
        run = Sender(world.store, Carrier(), world.publisher, "http://api.test", batches)
        batched = stored_for(world, batch=True)
        alone = stored_for(world, batch=False)
        assert run.send(batched.id).status == run.send(alone.id).status == "accepted"
        assert [(t, a) for t, a, _ in world.publisher.now] == [(POST_RECEIPT, [alone.id, 1])]
        assert [t for t, *_ in world.publisher.later] == [FLUSH_RECEIPTS]
        world.run()
        posted = [orjson.loads(request.content) for request in world.requests]
        assert posted[0]["id"] == alone.id  # the single receipt, a plain payload
        assert [r["id"] for r in posted[1]["receipts"]] == [batched.id]
        assert world.state(batched) == world.state(alone) == "sent"


def stored_for(world: World, *, batch: bool, dlr_level: int = 1) -> Message:
    message = Message(
        id=new_message_id(), to=TO, sender="smsq", content="hi", segments=1, dlr=True,
        dlr_level=dlr_level, dlr_url=URL_A, dlr_batch=batch, key_id=world.key.key.id,
    )  # fmt: skip
    world.store.create(message)
    return message


class TestReleased:
    def test_a_released_level_two_goes_straight_into_its_batch(self) -> None:
        """The flush that sends level 1 puts the level 2 it releases into the batch itself:
        no `sms.dlr.post` task in between."""
        world = World()
        message = world.opened(dlr_level=3)
        world.publish_receipts(message)
        world.publisher.now.clear()
        world.deliverer.deliver(message.id, 1)
        world.deliverer.deliver(message.id, 2)  # parks: level 1 is not sent yet
        (flush,) = [a for t, a, *_ in world.publisher.later if t == FLUSH_RECEIPTS]
        world.publisher.later.clear()
        world.flusher.flush(flush[0])
        assert [t for t, *_ in world.publisher.now] == []
        assert [t for t, *_ in world.publisher.later] == [FLUSH_RECEIPTS]
        world.run()
        assert [[r["level"] for r in body] for body in world.bodies()] == [[1], [2]]


class TestStraightFromTheIntake:
    def test_carrier_receipts_put_batched_receipts_straight_into_their_batch(self) -> None:
        """A terminal carrier receipt opens level 2: a `dlr-batch` message's goes into its
        batch, any other message's is published as `sms.dlr.post` (one round trip for all)."""
        world = World()
        batches = ReceiptBatches(world.store, world.publisher, BatchConfig(100, 200))
        intake = ReceiptIntake(world.store, world.publisher, batches)
        batched = stored_for(world, batch=True, dlr_level=2)
        alone = stored_for(world, batch=False, dlr_level=2)
        for message in (batched, alone):
            world.store.claim_segment(message.id, 1)
            world.store.accept_and_finish(message.id, 1, "fake", f"c-{message.id}", 1)
        delivered = {"status": "delivered", "error_code": None, "error_message": None}
        intake.apply_many([(batched.id, 1, delivered), (alone.id, 1, delivered)])
        assert [(t, a) for t, a, _ in world.publisher.now] == [(POST_RECEIPT, [alone.id, 2])]
        assert [t for t, *_ in world.publisher.later] == [FLUSH_RECEIPTS]
        world.run()
        assert world.state(batched, 2) == world.state(alone, 2) == "sent"
