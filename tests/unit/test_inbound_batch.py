"""Carrier receipts in batches: a request with many receipts gives the same store state
and client receipts as applying them one by one, in a fixed number of Redis round trips."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import fakeredis
import httpx
import orjson
import pytest
import redis
from celery import Celery

from worker.carriers.base import InboundRequest
from worker.carriers.sim import SimCarrier
from worker.contract import POST_RECEIPT
from worker.inbound import UNKNOWN_RECEIPTS_KEY, InboundOutcome, ReceiptIntake
from worker.queueing import CeleryPublisher
from worker.store import Message, Store

CARRIER = SimCarrier(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))), "")

# (message id, segments, dlr level or 0 for none); carrier ids are `c-{id}-{seq}`.
MESSAGES = [("m1", 1, 3), ("m2", 2, 2), ("m3", 1, 1), ("m4", 1, 0), ("m5", 1, 2)]

# In order: a final, an unknown id, a duplicate, an intermediate, finals of both parts of a
# two-part message, a late final after a final, a final without a level-2 receipt, and one
# for a message without receipts; m5 gets no receipt at all.
RECEIPTS = [
    ("c-m1-1", "DELIVRD"),
    ("c-unknown-1", "DELIVRD"),
    ("c-m1-1", "DELIVRD"),
    ("c-m2-1", "ENROUTE"),
    ("c-m2-1", "DELIVRD"),
    ("c-m2-2", "UNDELIV"),
    ("c-m2-2", "DELIVRD"),
    ("c-m3-1", "EXPIRED"),
    ("c-unknown-2", "UNDELIV"),
    ("c-m4-1", "DELIVRD"),
]

TIMESTAMP = re.compile(r"1\d{12}")  # milliseconds since the epoch


@dataclass
class Recorder:
    """A publisher recording jobs and how they were published."""

    jobs: list[tuple[str, list[Any], str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.calls.append("publish")
        self.jobs.append((task, list(args), queue))

    def publish_many(self, jobs: Sequence[tuple[str, Sequence[Any], str]]) -> None:
        self.calls.append("publish_many")
        self.jobs.extend((task, list(args), queue) for task, args, queue in jobs)

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        raise AssertionError("nothing is published later")


def world() -> Store:
    """A store with the `MESSAGES` submitted and accepted by the carrier."""
    store = Store(fakeredis.FakeRedis(decode_responses=True))
    for message_id, segments, level in MESSAGES:
        store.create(
            Message(
                id=message_id, to="+4915112345678", sender="smsq", content="hi",
                segments=segments, dlr=level > 0, dlr_level=level or 1,
                dlr_url="https://client.test/r" if level else "",
            )
        )  # fmt: skip
        for seq in range(1, segments + 1):
            store.record_accepted(message_id, seq, "sim", f"c-{message_id}-{seq}")
    return store


def request(items: list[tuple[str, str]], *, as_list: bool = True) -> InboundRequest:
    body = [{"carrier_id": cid, "status": status, "err": "000"} for cid, status in items]
    raw = orjson.dumps(body if as_list or len(body) != 1 else body[0])
    return InboundRequest("POST", "http://api.test/carriers/sim/dlr", {}, {}, raw)


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every key's value, with millisecond timestamps masked (and sorted sets as members)."""
    state: dict[str, object] = {}
    for key in sorted(cast(list[str], client.keys("*"))):
        kind = client.type(key)
        value: object
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "zset":
            value = sorted(cast(list[str], client.zrange(key, 0, -1)))
        else:
            raise AssertionError(f"unexpected {kind!r} at {key}")
        state[key] = orjson.loads(TIMESTAMP.sub("T", orjson.dumps(value).decode()))
    return state


def total(outcomes: list[InboundOutcome]) -> tuple[int, int, int]:
    return (
        sum(o.applied for o in outcomes),
        sum(o.unchanged for o in outcomes),
        sum(o.unknown for o in outcomes),
    )


@pytest.mark.parametrize("record_unknown", [True, False])
def test_a_batch_is_applied_as_if_one_by_one(record_unknown: bool) -> None:
    """Same outcome counts, store state (segments, messages, events, watch lists, parked and
    recorded unknown receipts) and client-receipt jobs; the jobs go in one publish_many."""
    one_store, one_publisher = world(), Recorder()
    one = ReceiptIntake(one_store, one_publisher)
    singles = [
        one.handle(CARRIER, request([item], as_list=False), record_unknown=record_unknown)
        for item in RECEIPTS
    ]
    batch_store, batch_publisher = world(), Recorder()
    batched = ReceiptIntake(batch_store, batch_publisher).handle(
        CARRIER, request(RECEIPTS), record_unknown=record_unknown
    )
    assert total([batched]) == total(singles) == (5, 3, 2)
    assert snapshot(batch_store.redis) == snapshot(one_store.redis)
    expected = [(POST_RECEIPT, ["m1", 2], "dlr"), (POST_RECEIPT, ["m2", 2], "dlr")]
    assert batch_publisher.jobs == one_publisher.jobs == expected
    assert batch_publisher.calls == ["publish_many"]
    fields = batch_store.fields("m2")
    assert (fields["status"], fields["rcpt:2:state"]) == ("undelivered", "open")
    assert batch_store.fields("m5")["status"] == "queued"
    unknown = cast(list[str], batch_store.redis.lrange(UNKNOWN_RECEIPTS_KEY, 0, -1))
    parked = batch_store.accept_segment("m5", 1, "sim", "c-unknown-1")[1]
    if record_unknown:
        assert [entry.split()[1:] for entry in unknown] == [
            ["sim", "c-unknown-2", "undelivered"],
            ["sim", "c-unknown-1", "delivered"],
        ]
        # Parked: storing the id (a resend answered with it) hands the receipt back.
        assert parked == [{"status": "delivered", "error_code": None, "error_message": None}]
    else:
        assert unknown == []
        assert parked == []


def test_the_level_two_receipt_opens_once_across_batches() -> None:
    """Replaying the same batch changes nothing and publishes nothing."""
    store, publisher = world(), Recorder()
    intake = ReceiptIntake(store, publisher)
    first = intake.handle(CARRIER, request(RECEIPTS))
    before = snapshot(store.redis)
    again = intake.handle(CARRIER, request(RECEIPTS), record_unknown=False)
    assert (first.applied, again.applied, again.unchanged, again.unknown) == (5, 0, 8, 2)
    assert len(publisher.jobs) == 2
    assert publisher.calls == ["publish_many"]
    assert snapshot(store.redis) == before


@dataclass
class RoundTrips:
    """Counts requests sent to Redis (a pipeline is one)."""

    count: int = 0

    def measure(self, action: Callable[[], object]) -> int:
        self.count = 0
        action()
        return self.count


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> tuple[Store, RoundTrips]:
    client = fakeredis.FakeRedis(decode_responses=True)
    counter = RoundTrips()
    connection_class = client.connection_pool.connection_class
    original = connection_class.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter.count += 1
        original(self, command, check_health)

    monkeypatch.setattr(connection_class, "send_packed_command", counting)
    return Store(client), counter


def many_messages(store: Store, count: int, prefix: str) -> list[tuple[str, str]]:
    """`count` accepted level-2 messages; their DELIVRD receipts and as many unknown ones."""
    items = []
    for i in range(count):
        message_id = f"{prefix}{i}"
        store.create(
            Message(
                id=message_id, to="+4915112345678", sender="smsq", content="hi", segments=1,
                dlr=True, dlr_level=2, dlr_url="https://client.test/r",
            )
        )  # fmt: skip
        store.record_accepted(message_id, 1, "sim", f"c-{message_id}")
        items += [(f"c-{message_id}", "DELIVRD"), (f"c-nobody-{message_id}", "DELIVRD")]
    return items


def test_a_batch_costs_a_fixed_number_of_round_trips(
    round_trips: tuple[Store, RoundTrips],
) -> None:
    """Looking up, parking, recording, applying and publishing (direct, into the store's
    Redis) take the same few round trips for 4 receipts as for 100."""
    store, counter = round_trips
    publisher = CeleryPublisher(Celery("unit", broker="memory://"), store.redis, direct=True)
    intake = ReceiptIntake(store, publisher)
    small, large = many_messages(store, 2, "s"), many_messages(store, 50, "l")
    warm = many_messages(store, 2, "w")  # the first run loads the scripts into Redis
    intake.handle(CARRIER, request(warm))
    store.redis.delete("dlr")
    small_trips = counter.measure(lambda: intake.handle(CARRIER, request(small)))
    large_trips = counter.measure(lambda: intake.handle(CARRIER, request(large)))
    # MGET; the parking tally; park (SCRIPT EXISTS + pipeline); record; apply (SCRIPT EXISTS +
    # pipeline); publish
    assert small_trips == large_trips <= 8
    queued = [orjson.loads(item) for item in cast(list[str], store.redis.lrange("dlr", 0, -1))]
    assert len(queued) == 52
    assert all(task["headers"]["task"] == POST_RECEIPT for task in queued)
    args = {tuple(orjson.loads(base64.b64decode(task["body"]))[0]) for task in queued}
    assert args == {(f"{p}{i}", 2) for p, n in (("s", 2), ("l", 50)) for i in range(n)}
    # The single-receipt path stays lean: GET, the script, the publish.
    single = [many_messages(store, 1, "one")[0]]
    assert counter.measure(lambda: intake.handle(CARRIER, request(single))) == 3
