"""The receipt engine: delivery, order, snapshots, retries, dead letters, endpoint health and
isolation, batches, batch events (fakeredis, a scripted network, the engine's real loop)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from producer.views import message_view
from tests.unit.receipt_world import URL, Handler, World, config, ok, slow
from worker.receipts import RETRY_SCHEDULE_SECONDS, dead_letters, replay
from worker.receipts.config import EngineConfig
from worker.receipts.endpoints import endpoint_for
from worker.receipts.engine import SECRETS_TTL_MS
from worker.store import RECEIPT_WATCH_KEY
from worker.store.keys import endpoint_health_key, endpoint_queue_key

MakeWorld = Callable[..., World]


@pytest.fixture
def make_world() -> Iterator[MakeWorld]:
    worlds: list[World] = []

    def make(handler: Handler = ok, engine: EngineConfig | None = None, **kw: Any) -> World:
        world = World(handler, engine, **kw)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


def status(code: int, **headers: str) -> Handler:
    return lambda request: httpx.Response(code, headers=headers)


def answers(*codes: int) -> Handler:
    """Each request gets the next status; then 200."""
    queue = list(codes)
    return lambda request: httpx.Response(queue.pop(0) if queue else 200)


class TestDelivery:
    def test_a_receipt_arrives_once_signed_with_its_snapshot(self, make_world: MakeWorld) -> None:
        """An opened receipt goes out once, signed, saying what was true when it opened."""
        world = make_world()
        message = world.message()
        world.open(message, 1)
        world.settle()
        (request,) = world.requests
        receipt = Webhook(world.key.webhook_secret).verify(request.content, dict(request.headers))
        assert receipt["id"] == message.id
        assert (receipt["level"], receipt["status"], receipt["message_status"]) == (
            1, "accepted", "ESME_ROK",
        )  # fmt: skip
        assert receipt["segments"] == {"total": 1, "accepted": 1, "delivered": 0, "failed": 0}
        assert (receipt["carrier"], receipt["client_ref"], receipt["seq"]) == ("sim", "ref-1", 1)
        assert request.headers["webhook-id"] == f"evt_{message.id}_1"
        assert world.state(message, 1) == "sent"
        assert world.redis.zscore(RECEIPT_WATCH_KEY, f"{message.id}:1") is None

    def test_the_content_is_what_was_true_when_the_receipt_opened(
        self, make_world: MakeWorld
    ) -> None:
        """A level-1 receipt sent after the handset receipt came still reports the moment of
        acceptance: accepted, no segment delivered (it is a snapshot, not a read at send time)."""
        world = make_world()
        message = world.message(level=1)
        assert world.store.open_receipt(message.id, 1)  # opened; not yet routed
        world.store.apply_receipt(message.id, 1, "delivered", None, None)
        world.router.route([(message.id, 1)])
        world.settle()
        (receipt,) = world.sent()
        assert receipt["status"] == "accepted"
        assert receipt["segments"] == {"total": 1, "accepted": 1, "delivered": 0, "failed": 0}
        assert world.store.fields(message.id)["status"] == "delivered"

    def test_every_attempt_and_a_replay_send_the_same_content(self, make_world: MakeWorld) -> None:
        """Attempts differ only in `attempt`; a replay repeats the same event."""
        world = make_world(handler=answers(503))
        message = world.message()
        world.open(message, 1)
        world.settle()
        world.advance(RETRY_SCHEDULE_SECONDS[0] * 1200)
        assert replay(world.store, world.publisher, [f"{message.id}:1"]) == 1
        world.router.route([(message.id, 1)])
        world.settle()
        first, second, third = world.sent()
        for receipt in (first, second, third):
            receipt.pop("attempt")
        assert first == second == third

    def test_level_two_waits_for_level_one(self, make_world: MakeWorld) -> None:
        """A level-3 message's level 2 is sent after its level 1 is done, with the next seq."""
        world = make_world(handler=answers(503))
        message = world.message(level=3)
        world.store.open_receipt(message.id, 1)
        world.store.apply_receipt(message.id, 1, "delivered", None, None)  # opens level 2
        world.router.route([(message.id, 2), (message.id, 1)])
        world.settle()
        assert world.state(message, 2) == "waiting"
        assert [r["level"] for r in world.sent()] == [1]
        world.advance(RETRY_SCHEDULE_SECONDS[0] * 1200)
        assert [(r["level"], r["seq"]) for r in world.sent()] == [(1, 1), (1, 1), (2, 2)]
        assert (world.state(message, 1), world.state(message, 2)) == ("sent", "sent")

    def test_get_receipts_carry_the_fields_as_a_signed_query(self, make_world: MakeWorld) -> None:
        """`dlr-method` GET (any case) sends the fields in the query, signed as sent."""
        world = make_world()
        message = world.message(url=f"{URL}?t=1", method="get")
        world.open(message, 1)
        world.settle()
        (request,) = world.requests
        assert request.method == "GET"
        assert request.url.params["t"] == "1"
        assert request.url.params["segments_total"] == "1"
        secret = world.key.webhook_secret
        Webhook(secret).verify(request.url.query, dict(request.headers), json_parse=False)


class TestRetries:
    def test_a_failed_attempt_waits_for_its_schedule_and_says_why(
        self, make_world: MakeWorld
    ) -> None:
        """A 503 makes the receipt due later (durably); GET /sms/{id} says why it waits."""
        world = make_world(handler=answers(503))
        message = world.message()
        world.open(message, 1)
        world.settle()
        assert world.state(message, 1) == "open"
        due = world.redis.zscore(RECEIPT_WATCH_KEY, f"{message.id}:1")
        assert due is not None
        assert due >= world.clock() + RETRY_SCHEDULE_SECONDS[0] * 800
        endpoint = endpoint_for(world.key.key.id, URL).id
        assert world.redis.zscore(endpoint_queue_key(endpoint), f"{message.id}:1") == due
        view = message_view(world.store, world.store.fields(message.id))["receipts"]["1"]
        assert view["why"] == "HTTP 503"
        assert [(h["result"], h["status_code"]) for h in view["history"]] == [("retry", 503)]
        world.advance(RETRY_SCHEDULE_SECONDS[0] * 1200)
        view = message_view(world.store, world.store.fields(message.id))["receipts"]["1"]
        assert [(h["result"], h["attempt"]) for h in view["history"]] == [
            ("retry", 1), ("sent", 2),
        ]  # fmt: skip
        assert view["why"] is None
        assert world.state(message, 1) == "sent"

    def test_gone_stops_at_once(self, make_world: MakeWorld) -> None:
        """A 410 closes the receipt for good: no retry, no dead letter."""
        world = make_world(handler=status(410))
        message = world.message()
        world.open(message, 1)
        world.settle()
        assert world.state(message, 1) == "gone"
        assert dead_letters(world.store) == []
        assert world.later_drains() == []

    def test_after_the_last_attempt_the_receipt_is_dead_lettered(
        self, make_world: MakeWorld
    ) -> None:
        """When the schedule is used up, the receipt goes to the dead letters, counted."""
        world = make_world(handler=status(503))
        message = world.message()
        world.redis.hset(f"smsq:msg:{message.id}", "rcpt:1:attempts", len(RETRY_SCHEDULE_SECONDS))
        world.open(message, 1)
        world.settle()
        assert world.state(message, 1) == "dead"
        assert dead_letters(world.store) == [f"{message.id}:1"]
        assert world.store.counters() == {"receipt_dead": 1}

    def test_a_key_without_secrets_never_sends_unsigned(self, make_world: MakeWorld) -> None:
        """Receipts of a deleted key are dead-lettered, never sent unsigned."""
        world = make_world()
        message = world.message(key_id="deleted-key")
        world.open(message, 1)
        world.settle()
        assert world.requests == []
        assert world.state(message, 1) == "dead"

    def test_a_rotated_secret_signs_from_at_most_the_cache_time_later(
        self, make_world: MakeWorld
    ) -> None:
        """Secrets are read at most every SECRETS_TTL_MS: a rotation that replaces the secret
        at once signs every receipt sent from that time on (and none sooner is required)."""
        world = make_world()
        first = world.message()
        world.open(first, 1)
        world.settle()
        fresh = world.keys.rotate_secret(world.key.key.id, 0)
        assert fresh is not None
        world.clock.now += SECRETS_TTL_MS
        second = world.message()
        world.open(second, 1)
        world.settle()
        old, new = world.requests
        Webhook(world.key.webhook_secret).verify(old.content, dict(old.headers))
        receipt = Webhook(fresh).verify(new.content, dict(new.headers))
        assert receipt["id"] == second.id
        with pytest.raises(WebhookVerificationError):
            Webhook(world.key.webhook_secret).verify(new.content, dict(new.headers))


class TestEndpointHealth:
    def test_a_failing_endpoint_backs_off_as_a_whole_and_recovers(
        self, make_world: MakeWorld
    ) -> None:
        """Five failures in a row back the endpoint off: its receipts wait in its queue and
        a drain is planned for the backoff's end; then a probe succeeds and all go."""
        world = make_world(handler=status(500))
        messages = [world.message() for _ in range(8)]
        for message in messages:
            world.open(message, 1)
        world.settle()
        endpoint = endpoint_for(world.key.key.id, URL).id
        health = world.receipts.health(endpoint)
        assert health.failures >= 5
        assert health.backoff_until > world.clock()
        assert (health.reason, health.origin) == ("HTTP 500", "https://client.test:443")
        assert len(world.requests) <= 5 + world.config.endpoint_concurrency
        world.handler = ok
        world.advance(5_000)  # the backoff's end: a probe, then everything due
        world.advance(RETRY_SCHEDULE_SECONDS[0] * 1200)
        assert {world.state(m, 1) for m in messages} == {"sent"}
        assert world.redis.exists(endpoint_health_key(endpoint)) == 0

    def test_retry_after_backs_the_endpoint_off_for_that_long(self, make_world: MakeWorld) -> None:
        """A 429 with Retry-After: 30 holds the whole endpoint for 30 s, at once."""
        world = make_world(handler=status(429, **{"retry-after": "30"}))
        for _ in range(3):
            world.open(world.message(), 1)
        world.settle()
        endpoint = endpoint_for(world.key.key.id, URL).id
        health = world.receipts.health(endpoint)
        assert health.backoff_until == pytest.approx(world.clock() + 30_000, abs=1000)
        assert max(world.later_drains()) == pytest.approx(30.0, abs=1.0)


class TestRecording:
    def test_the_next_request_goes_while_an_outcome_is_written_within_a_bound(
        self, make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With Redis slow to record outcomes, the endpoint's connection is not idle: a worker
        goes on to its next receipt while its outcome is written, but never more than
        `endpoint_concurrency` outcomes wait (here 1: two requests, not three, until the
        write ends). Every receipt is recorded sent in the end."""
        world = make_world(engine=config(endpoint_concurrency=1))
        writing = threading.Event()
        release = threading.Event()
        settle = world.receipts.settle

        def slow_settle(*args: Any, **kwargs: Any) -> Any:
            writing.set()
            assert release.wait(10), "the test never released the write"
            return settle(*args, **kwargs)

        monkeypatch.setattr(world.receipts, "settle", slow_settle)
        messages = [world.message() for _ in range(3)]
        for message in messages:
            world.open(message, 1)
        world.wait(lambda: writing.is_set() and len(world.requests) == 2)
        assert {world.state(m, 1) for m in messages} == {"sending"}  # taken, none recorded
        time.sleep(0.2)  # a third request would have had time to go (it must not)
        assert len(world.requests) == 2
        release.set()
        world.settle()
        assert [world.state(m, 1) for m in messages] == ["sent"] * 3
        assert len(world.requests) == 3

    def test_a_healthy_endpoints_next_receipts_are_taken_before_the_buffer_runs_dry(
        self, make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With `take` receipts in hand and fewer than `endpoint_concurrency` left unsent, the
        next take runs while requests are still in flight (not after the last one ends)."""
        world = make_world(engine=config(endpoint_concurrency=2, take=4))
        takes: list[int] = []
        take = world.receipts.take

        def counting_take(*args: Any, **kwargs: Any) -> Any:
            takes.append(len(world.requests))
            return take(*args, **kwargs)

        monkeypatch.setattr(world.receipts, "take", counting_take)
        release = threading.Event()

        async def held(request: httpx.Request) -> httpx.Response:
            while not release.is_set():
                await asyncio.sleep(0.01)
            return httpx.Response(200)

        world.handler = lambda request: held(request) if len(world.requests) > 2 else ok(request)
        messages = [world.message() for _ in range(8)]
        for message in messages:
            world.open(message, 1)
        # Requests 1-2 answer at once, 3-4 hang: 4 taken, all sent, 2 in flight; the buffer
        # ran below 2 after the third was sent, so a second take ran meanwhile.
        world.wait(lambda: len(world.requests) == 4 and len(takes) >= 2)
        assert not release.is_set()
        release.set()
        world.settle()
        assert [world.state(m, 1) for m in messages] == ["sent"] * 8

    def test_a_failed_write_ends_the_drain_and_the_leases_bring_the_receipts_back(
        self, make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Redis failing while outcomes are written: the drain ends (its endpoint given back),
        nothing is recorded as sent that was not, and the claims stay for the reconciler."""
        world = make_world(engine=config(endpoint_concurrency=1))

        def broken_settle(*args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("Redis went away")

        monkeypatch.setattr(world.receipts, "settle", broken_settle)
        messages = [world.message() for _ in range(3)]
        for message in messages:
            world.open(message, 1)
        world.settle()
        assert 1 <= len(world.requests) <= 3
        assert {world.state(m, 1) for m in messages} <= {"sending", "open"}


class TestIsolation:
    def test_a_slow_endpoint_delays_no_one_else(self, make_world: MakeWorld) -> None:
        """While every request to a slow endpoint hangs, another endpoint's receipts all
        arrive: the slow one holds its own drain only."""
        release = threading.Event()
        healthy_done: list[str] = []

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.headers["host"] == "slow.test":
                while not release.is_set():
                    await asyncio.sleep(0.01)
                return httpx.Response(200)
            healthy_done.append(request.headers["host"])
            return httpx.Response(200)

        world = make_world(handler=handler, engine=config(deadline=5.0))
        slow_messages = [world.message(url="https://slow.test/r") for _ in range(10)]
        fine = [world.message(url="https://fine.test/r") for _ in range(10)]
        for message in slow_messages + fine:
            world.open(message, 1)
        world.wait(lambda: len(healthy_done) == 10)
        assert not release.is_set()  # every slow request is still hanging
        slow_requests = [r for r in world.requests if r.headers["host"] == "slow.test"]
        assert len(slow_requests) == world.config.endpoint_concurrency
        release.set()
        world.settle()
        assert {world.state(m, 1) for m in slow_messages + fine} == {"sent"}

    def test_in_flight_requests_are_capped_per_endpoint_and_per_key(
        self, make_world: MakeWorld
    ) -> None:
        """At most `endpoint_concurrency` requests to one endpoint and `key_concurrency` for one
        key are in flight at once, however many receipts wait."""
        in_flight: dict[str, int] = {}
        peaks: dict[str, int] = {}
        lock = threading.Lock()

        async def handler(request: httpx.Request) -> httpx.Response:
            host = request.headers["host"]
            with lock:
                in_flight[host] = in_flight.get(host, 0) + 1
                in_flight["all"] = in_flight.get("all", 0) + 1
                for name in (host, "all"):
                    peaks[name] = max(peaks.get(name, 0), in_flight[name])
            await asyncio.sleep(0.05)
            with lock:
                in_flight[host] -= 1
                in_flight["all"] -= 1
            return httpx.Response(200)

        engine = config(endpoint_concurrency=3, key_concurrency=5)
        world = make_world(handler=handler, engine=engine)
        messages = [world.message(url=f"https://h{i % 3}.test/r") for i in range(36)]
        for message in messages:
            world.open(message, 1)
        world.wait(lambda: len(world.requests) == 36)
        world.settle()
        assert max(peaks[f"h{i}.test"] for i in range(3)) <= 3
        assert peaks["all"] <= 5
        assert peaks["all"] >= 3  # they did run side by side

    def test_an_attempt_that_hangs_is_cut_at_the_deadline(self, make_world: MakeWorld) -> None:
        """A request that never answers fails at the deadline and waits for its retry."""
        world = make_world(handler=slow(30.0), engine=config(deadline=0.2))
        message = world.message()
        world.open(message, 1)
        world.settle()
        assert world.state(message, 1) == "open"
        view = message_view(world.store, world.store.fields(message.id))["receipts"]["1"]
        assert view["why"] == "timeout after 0.2 s"


class TestBatches:
    def test_dlr_batch_receipts_to_one_url_travel_together(self, make_world: MakeWorld) -> None:
        """`dlr-batch` receipts gathered in a window go in one signed POST per URL."""
        world = make_world()
        messages = [world.message(batch=True) for _ in range(30)]
        for message in messages:
            world.open(message, 1)
        assert world.requests == []  # the window gathers them
        assert world.later_drains()
        world.advance(world.config.batch_window_ms)
        assert len(world.requests) == 1
        verifier = Webhook(world.key.webhook_secret)
        arrived = []
        for request in world.requests:
            assert request.headers["webhook-id"].startswith("batch_")
            arrived += verifier.verify(request.content, dict(request.headers))["receipts"]
        assert sorted(r["id"] for r in arrived) == sorted(m.id for m in messages)
        assert {world.state(m, 1) for m in messages} == {"sent"}

    def test_a_full_batch_goes_at_once(self, make_world: MakeWorld) -> None:
        """A window that gathers `batch_max` receipts does not wait for its end."""
        world = make_world(engine=config(batch_max=10))
        for _ in range(10):
            world.open(world.message(batch=True), 1)
        world.wait(lambda: len(world.sent()) == 10)
        assert len(world.requests) == 1

    def test_batch_events_travel_like_receipts(self, make_world: MakeWorld) -> None:
        """A campaign's pending callback event is POSTed, signed under its event id, and then
        remembered as sent, unless a newer one replaced it meanwhile."""
        world = make_world()
        batch_key = "smsq:batch:b1"
        world.redis.hset(batch_key, mapping={"callback_url": "https://cb.test/batches",
                                             "key_id": world.key.key.id})  # fmt: skip
        body = {"type": "batch.progress", "event_id": "evt_batch_b1_1", "batch": {"id": "b1"}}
        world.receipts.put_batch_event("b1", "evt_batch_b1_1", body, "sig-1")
        world.router.route_event("b1", "https://cb.test/batches", world.key.key.id)
        world.settle()
        (request,) = world.requests
        assert request.headers["webhook-id"] == "evt_batch_b1_1"
        assert orjson.loads(request.content) == body
        assert world.redis.hget(batch_key, "callback_sent") == "sig-1"


class TestStopping:
    def test_a_stopped_engine_refuses_drains(self, make_world: MakeWorld) -> None:
        """After `stop`, `ring` raises so the task goes back to the queue for another worker."""
        world = make_world()
        world.engine.stop(1.0)
        with pytest.raises(RuntimeError):
            world.engine.ring("any")
