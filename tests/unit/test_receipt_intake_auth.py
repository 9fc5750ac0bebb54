"""Intake of authenticated receipts: a segment's token changes that segment only (now or once
its parked receipt meets its carrier id), and unknown ids are parked briefly, under a cap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fakeredis
import httpx
import orjson
from prometheus_client import REGISTRY

from worker.carriers.base import InboundRequest
from worker.carriers.sim import SimCarrier
from worker.inbound import UNKNOWN_RECEIPTS_KEY, Parking, ReceiptIntake
from worker.queueing import Publisher
from worker.store import Message, Store, parked_receipts_key

CARRIER = SimCarrier(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))), "")


class Jobs:
    """A publisher keeping what it was given."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, list[Any], str]] = []

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.jobs.append((task, list(args), queue))

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        raise AssertionError("nothing is published later")


def world(*accepted: str, pending: tuple[str, ...] = ()) -> Store:
    """Single-segment messages; those `accepted` have carrier id `c-{id}`."""
    store = Store(fakeredis.FakeRedis(decode_responses=True))
    for message_id in (*accepted, *pending):
        store.create(
            Message(id=message_id, to="+4915112345678", sender="smsq", content="hi", segments=1)
        )
    for message_id in accepted:
        store.record_accepted(message_id, 1, "sim", f"c-{message_id}")
    return store


def intake(store: Store, parking: Parking | None = None) -> ReceiptIntake:
    publisher: Publisher = Jobs()
    return ReceiptIntake(store, publisher, parking=parking or Parking())


def request(items: list[tuple[str, str]], ref: str | None = None) -> InboundRequest:
    body = orjson.dumps([{"carrier_id": cid, "status": status} for cid, status in items])
    query = {"ref": ref, "token": "checked-by-the-route"} if ref else {}
    return InboundRequest("POST", "http://api.test/carriers/sim/dlr", query, {}, body)


def status(store: Store, message_id: str) -> str:
    return str(store.segments(message_id, 1)[0].status)


def refused(reason: str) -> float:
    labels = {"carrier": "sim", "reason": reason}
    return REGISTRY.get_sample_value("smsq_carrier_receipts_refused_total", labels) or 0.0


class TestTokenForOneSegment:
    def test_a_receipt_for_another_segment_changes_nothing_and_is_counted(self) -> None:
        store = world("m1", "m2")
        before = refused("wrong_segment")
        outcome = intake(store).handle(
            CARRIER, request([("c-m2", "UNDELIV"), ("c-m1", "DELIVRD")], ref="m1:1")
        )
        assert (outcome.applied, outcome.unchanged, outcome.unknown) == (1, 1, 0)
        assert status(store, "m1") == "delivered"
        assert status(store, "m2") == "accepted"
        assert refused("wrong_segment") == before + 1

    def test_without_a_token_any_segment_of_the_carrier(self) -> None:
        """A request the carrier signed (batches of many segments) is bound to none."""
        store = world("m1", "m2")
        outcome = intake(store).handle(CARRIER, request([("c-m2", "UNDELIV"), ("c-m1", "DELIVRD")]))
        assert outcome.applied == 2

    def test_a_parked_receipt_under_another_segments_token_is_refused_later(self) -> None:
        """The carrier id is unknown when the receipt comes: parked with its token's segment,
        it is refused when the id turns out to be another segment's."""
        store = world(pending=("m1", "m2"))
        before = refused("wrong_segment")
        outcome = intake(store).handle(CARRIER, request([("c-x", "UNDELIV")], ref="m1:1"))
        assert outcome.unknown == 1
        _, parked = store.accept_segment("m2", 1, "sim", "c-x")
        assert [p["ref"] for p in parked] == ["m1:1"]
        assert intake(store).apply_to("m2", 1, parked[0]) is False
        assert status(store, "m2") == "accepted"
        assert refused("wrong_segment") == before + 1

    def test_a_parked_receipt_for_its_own_segment_applies(self) -> None:
        store = world(pending=("m1",))
        intake(store).handle(CARRIER, request([("c-m1", "DELIVRD")], ref="m1:1"))
        _, parked = store.accept_segment("m1", 1, "sim", "c-m1")
        assert intake(store).apply_to("m1", 1, parked[0]) is True
        assert status(store, "m1") == "delivered"


class TestParking:
    def test_unknown_ids_wait_minutes_not_days(self) -> None:
        store = world()
        intake(store, Parking(seconds=120)).handle(CARRIER, request([("c-x", "DELIVRD")]))
        ttl = store.redis.ttl(parked_receipts_key("sim", "c-x"))
        assert 0 < ttl <= 120

    def test_beyond_the_cap_receipts_are_refused_and_counted(self) -> None:
        store = world()
        before = refused("parking_full")
        parking = Parking(seconds=600, limit=3)
        items = [(f"c-{i}", "DELIVRD") for i in range(5)]
        outcome = intake(store, parking).handle(CARRIER, request(items))
        assert outcome.unknown == 5
        kept = [i for i in range(5) if store.redis.exists(parked_receipts_key("sim", f"c-{i}"))]
        assert kept == [0, 1, 2]
        assert refused("parking_full") == before + 2
        assert store.redis.llen(UNKNOWN_RECEIPTS_KEY) == 5
        # The cap holds across requests too, until the parked ones age out.
        intake(store, parking).handle(CARRIER, request([("c-9", "DELIVRD")]))
        assert not store.redis.exists(parked_receipts_key("sim", "c-9"))
        assert refused("parking_full") == before + 3
