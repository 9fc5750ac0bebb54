"""Inbound messages' webhooks in the receipt engine: signed delivery, retries on the receipts'
schedule, 410, dead letters and replay, a deleted key, the reconciler's second chance
(fakeredis, a scripted network, the engine's real loop)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.unit.receipt_world import Handler, World, ok
from worker.clock import now_ms
from worker.contract import ROUTE_MO
from worker.mo.intake import MoIntake
from worker.mo.keywords import Keywords
from worker.mo.owners import Owners
from worker.mo.webhook import due_again
from worker.receipts import RETRY_SCHEDULE_SECONDS
from worker.reconciler import Reconciler, ReconcilerConfig
from worker.store import Store
from worker.store.keys import MO_DEAD_KEY, MO_WATCH_KEY
from worker.store.mo import MoRecord

HOOK = "https://client.test/mo"
OURS = "+4930123456"


class MoWorld(World):
    """The receipt world with an intake whose webhooks go through its engine."""

    def __init__(self, handler: Handler = ok) -> None:
        super().__init__(handler)
        self.intake = MoIntake(self.redis, self.router, keywords=Keywords.of(["en"]),
                               reassembly_ms=60_000)  # fmt: skip
        Owners(self.redis).assign(self.key.key.id, OURS, HOOK)

    def mo(self, text: str = "hello") -> str:
        mo_id = self.intake.accept("sim", "+4915112340001", OURS, text, received_at=now_ms())
        assert mo_id is not None
        return mo_id

    def record(self, mo_id: str) -> MoRecord:
        found = self.intake.store.load(mo_id)
        assert found is not None
        return found


@pytest.fixture
def worlds() -> Iterator[list[MoWorld]]:
    made: list[MoWorld] = []
    yield made
    for world in made:
        world.close()


def world_of(worlds: list[MoWorld], handler: Handler = ok) -> MoWorld:
    world = MoWorld(handler)
    worlds.append(world)
    return world


def answers(*codes: int) -> Handler:
    queue = list(codes)
    return lambda request: httpx.Response(queue.pop(0) if queue else 200)


class TestDelivery:
    def test_the_webhook_arrives_signed_with_the_mo(self, worlds: list[MoWorld]) -> None:
        """A standardwebhooks receiver verifies it with the key's secret; it says the MO."""
        world = world_of(worlds)
        mo_id = world.mo("STOP")
        world.settle()
        (request,) = world.requests
        assert (request.headers["host"], request.url.path) == ("client.test", "/mo")
        assert request.headers["webhook-id"] == f"evt_mo_{mo_id}"
        body: dict[str, Any] = Webhook(world.key.webhook_secret).verify(
            request.content, dict(request.headers)
        )
        assert body == {
            "type": "mo", "id": mo_id, "from": "+4915112340001", "to": OURS, "text": "STOP",
            "carrier": "sim", "received_at": body["received_at"], "keyword": "optout",
            "parts": 1, "missing_parts": [],
        }  # fmt: skip
        record = world.record(mo_id)
        assert (record.state, record.attempts) == ("sent", 1)
        assert world.redis.zscore(MO_WATCH_KEY, mo_id) is None

    def test_receipts_and_mo_webhooks_share_the_endpoint(self, worlds: list[MoWorld]) -> None:
        """A receipt and an MO to the same origin travel in one queue, each once."""
        world = world_of(worlds)
        message = world.message(url="https://client.test/dlr")
        world.open(message, 1)
        mo_id = world.mo()
        world.settle()
        kinds = sorted(orjson.loads(r.content).get("type", "receipt") for r in world.requests)
        assert kinds == ["mo", "receipt"]
        assert world.record(mo_id).state == "sent"


class TestRetries:
    def test_a_failure_is_retried_on_the_receipt_schedule(self, worlds: list[MoWorld]) -> None:
        """503 leaves it open, due about 5 s later (why remembered); then it is sent."""
        world = world_of(worlds, answers(503))
        mo_id = world.mo()
        world.settle()
        record = world.record(mo_id)
        assert record.state == "open"
        delay = record.not_before - world.clock.now
        assert 0.8 * RETRY_SCHEDULE_SECONDS[0] * 1000 <= delay <= 1.2 * 5000 + 100
        assert world.redis.hget(f"smsq:mo:{mo_id}", "why")
        world.advance(delay + 1)
        world.settle()
        assert world.record(mo_id).state == "sent"
        assert len(world.requests) == 2
        assert world.requests[0].headers["webhook-id"] == world.requests[1].headers["webhook-id"]

    def test_410_stops_at_once(self, worlds: list[MoWorld]) -> None:
        world = world_of(worlds, answers(410))
        mo_id = world.mo()
        world.settle()
        assert world.record(mo_id).state == "gone"
        assert world.redis.zscore(MO_WATCH_KEY, mo_id) is None

    def test_out_of_attempts_it_is_dead_lettered_then_replayed(
        self, worlds: list[MoWorld]
    ) -> None:
        """After the last retry it is dead (listed for `smsq mo replay`); a replay sends the
        same webhook again with a fresh schedule."""
        failing = True
        world = world_of(worlds, lambda r: httpx.Response(500 if failing else 200))
        mo_id = world.mo()
        for _ in RETRY_SCHEDULE_SECONDS:
            world.settle()
            record = world.record(mo_id)
            assert record.state == "open"
            world.advance(record.not_before - world.clock.now + 1)
        world.settle()
        assert world.record(mo_id).state == "dead"
        assert world.intake.store.dead() == [mo_id]
        failing = False
        assert world.intake.store.replay(mo_id, world.clock.now)
        assert world.redis.zscore(MO_DEAD_KEY, mo_id) is None
        found = due_again(world.intake.store, mo_id, world.clock.now)
        assert found is not None
        world.router.route_mo(mo_id, HOOK, world.key.key.id, found[1])
        world.advance(600_001)  # the endpoint's own backoff after so many failures
        assert world.record(mo_id).state == "sent"
        assert len(world.requests) == len(RETRY_SCHEDULE_SECONDS) + 2

    def test_a_deleted_key_never_gets_an_unsigned_webhook(self, worlds: list[MoWorld]) -> None:
        world = world_of(worlds)
        world.redis.hset(f"smsq:key:{world.key.key.id}", "secrets", "")
        mo_id = world.mo()
        world.settle()
        assert not world.requests
        assert world.record(mo_id).state == "dead"


class TestReconciler:
    def test_a_webhook_left_sending_is_routed_again(self, worlds: list[MoWorld]) -> None:
        """The drain holding it died (its lease ran out): the reconciler publishes
        `sms.mo.route`, which puts it in its queue again; one still open is looked at
        again later; a sent one is forgotten."""
        world = world_of(worlds)
        mo_id = world.mo()
        world.settle()
        world.redis.hset(f"smsq:mo:{mo_id}", mapping={"state": "sending", "lease": "1"})
        world.redis.zadd(MO_WATCH_KEY, {mo_id: 1})
        published: list[tuple[str, list[Any]]] = []

        class Recorder:
            def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
                published.append((task, list(args)))

            def publish_later(self, *args: Any) -> None:
                raise AssertionError("not expected")

        reconciler = Reconciler(Store(world.redis), Recorder(), ReconcilerConfig(grace=1.0))
        done = reconciler.run_once()
        assert done.counts.get("republished_mo") == 1
        assert published == [(ROUTE_MO, [mo_id])]
        found = due_again(world.intake.store, mo_id, world.clock.now)
        assert found is not None
        world.router.route_mo(mo_id, HOOK, world.key.key.id, found[1])
        world.settle()
        assert world.record(mo_id).state == "sent"
        assert len(world.requests) == 2  # at least once, under the same webhook id
        assert due_again(world.intake.store, mo_id, world.clock.now) is None
        assert world.redis.zscore(MO_WATCH_KEY, mo_id) is None
