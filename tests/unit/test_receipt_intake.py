"""Carrier receipts in, drained in batches: the inbox, the drain, its hold and its leases
(fakeredis running the Lua, the simulator's receipt format)."""

from __future__ import annotations

import base64
from typing import Any

import fakeredis
import httpx
import orjson
import pytest

from tests.unit.test_sending import Publisher
from worker.carriers.base import Carrier
from worker.carriers.sim import SimCarrier
from worker.clock import now_ms
from worker.contract import DRAIN_CARRIER_RECEIPTS
from worker.errors import NotFoundError
from worker.inbound import UNKNOWN_RECEIPTS_KEY, Parking, ReceiptIntake
from worker.receipts.intake import DRAIN_BATCH, IntakeDrain, accept
from worker.store import Message, Store
from worker.store.inbox import Inbox
from worker.store.keys import INBOX_KEY, INBOX_WATCH_KEY

SIM = SimCarrier(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))), "")


class World:
    def __init__(self) -> None:
        self.redis = fakeredis.FakeRedis(decode_responses=True)
        self.store = Store(self.redis)
        self.inbox = Inbox(self.redis)
        self.publisher = Publisher()
        intake = ReceiptIntake(self.store, self.publisher, parking=Parking())
        self.drain = IntakeDrain(self.inbox, intake, self.carrier, self.publisher)

    @staticmethod
    def carrier(name: str) -> Carrier:
        if name != "sim":
            raise NotFoundError(f"no carrier named {name!r}")
        return SIM

    def message(self, message_id: str) -> None:
        """A one-segment message whose segment the carrier took as `c-{id}`."""
        self.store.create(
            Message(id=message_id, to="+14155552671", sender="s", content="hi", segments=1)
        )
        assert self.store.claim_segment(message_id, 1)
        self.store.record_accepted(message_id, 1, "sim", f"c-{message_id}")

    def keep(self, *receipts: tuple[str, str], carrier: str = "sim") -> str:
        """A carrier request listing `(carrier id, status)` receipts, kept in the inbox."""
        body = orjson.dumps([{"carrier_id": c, "status": s} for c, s in receipts])
        request = {"method": "POST", "url": "http://smsq/carriers/sim/dlr", "query": {},
                   "headers": {"content-type": "application/json"},
                   "body": base64.b64encode(body).decode(), "form": {}}  # fmt: skip
        return accept(self.inbox, self.publisher_for_api, carrier, request)

    @property
    def publisher_for_api(self) -> Any:
        return self.publisher

    def status(self, message_id: str) -> str:
        return self.store.fields(message_id)["status"]


@pytest.fixture
def world() -> World:
    return World()


def drains(world: World) -> list[Any]:
    return [job for job in world.publisher.now if job[0] == DRAIN_CARRIER_RECEIPTS]


class TestInbox:
    def test_requests_are_kept_and_one_drain_is_started_for_all(self, world: World) -> None:
        """Each request waits in the inbox; only the first starts a drain."""
        for message_id in ("m1", "m2", "m3"):
            world.keep((f"c-{message_id}", "DELIVRD"))
        assert world.redis.hlen(INBOX_KEY) == 3
        assert world.redis.zcard(INBOX_WATCH_KEY) == 3
        assert len(drains(world)) == 1


class TestDrain:
    def test_one_drain_applies_every_request_in_order(self, world: World) -> None:
        """Receipts of many requests are applied together, in the order they came (an
        intermediate then a final stays final), and the requests are forgotten."""
        for message_id in ("m1", "m2"):
            world.message(message_id)
        world.keep(("c-m1", "ACCEPTD"))  # accepted already: unchanged
        world.keep(("c-m1", "DELIVRD"), ("c-m2", "UNDELIV"))
        world.keep(("c-m2", "DELIVRD"))  # late: a final never changes
        tally = world.drain.drain()
        assert (tally.requests, tally.applied, tally.unchanged) == (3, 2, 2)
        assert (world.status("m1"), world.status("m2")) == ("delivered", "undelivered")
        assert world.redis.hlen(INBOX_KEY) == 0
        assert world.redis.zcard(INBOX_WATCH_KEY) == 0

    def test_a_drain_takes_a_batch_at_a_time_until_none_is_left(self, world: World) -> None:
        """More requests than one batch are all applied by one drain."""
        world.message("m1")
        for _ in range(DRAIN_BATCH + 5):
            world.keep(("c-m1", "DELIVRD"))
        assert world.drain.drain().requests == DRAIN_BATCH + 5
        assert world.redis.hlen(INBOX_KEY) == 0

    def test_garbage_and_unknown_carriers_are_recorded_not_retried(self, world: World) -> None:
        """A request that cannot be read is recorded as invalid and forgotten."""
        world.keep(("", "NONSENSE"))
        world.keep(("c-x", "DELIVRD"), carrier="gone")
        assert world.drain.drain().invalid == 2
        assert world.redis.hlen(INBOX_KEY) == 0
        assert world.redis.llen(UNKNOWN_RECEIPTS_KEY) == 2

    def test_a_second_drain_leaves_the_running_one_alone(self, world: World) -> None:
        """While one drain holds the inbox, another started meanwhile ends at once."""
        world.message("m1")
        world.keep(("c-m1", "DELIVRD"))
        assert world.inbox.lease("other", now_ms(), 10, 60_000, 15_000, keep=True).state == "items"
        assert world.drain.drain().requests == 0
        assert world.status("m1") == "queued"

    def test_requests_of_a_drain_that_died_are_due_again_after_its_lease(
        self, world: World
    ) -> None:
        """A drain that leased requests and died leaves them due when its lease ends; the next
        drain plans itself for then and applies them."""
        world.message("m1")
        world.keep(("c-m1", "DELIVRD"))
        start = now_ms()
        assert world.inbox.lease("dead", start, 10, 5_000, 1, keep=False).state == "items"
        world.redis.delete("smsq:inbox:ring")  # its hold ran out
        world.drain.clock = lambda: start + 100
        assert world.drain.drain().requests == 0
        ((task, _, _, delay),) = world.publisher.later
        assert task == DRAIN_CARRIER_RECEIPTS
        assert 4.0 <= delay <= 5.0
        world.drain.clock = lambda: start + 5_001
        assert world.drain.drain().applied == 1
        assert world.status("m1") == "delivered"
