"""Cheaper sends: chunks of ids per task, the merged store steps, pacing is no attempt."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import fakeredis
import orjson
import pytest

from tests.unit.test_routing import FakeCarrier, config
from tests.unit.test_sending import (
    TO,
    TWO_SEGMENTS,
    Carrier,
    IdempotentCarrier,
    sender,
    stored,
    unavailable,
)
from worker.carriers.base import Accepted, SegmentSubmission
from worker.carriers.config import RouteConfig
from worker.carriers.routes import RouteTable
from worker.carriers.routing import Gate, RoutedCarrier
from worker.clock import now_ms
from worker.contract import SEND_SMS
from worker.errors import CarrierRejectedError, CarrierUnavailableError
from worker.ratelimit import RateLimiter
from worker.records import Finished
from worker.sending import MAX_SEND_ATTEMPTS
from worker.store import (
    DELIVERY_WATCH_KEY,
    RECEIPT_WATCH_KEY,
    SUBMIT_WATCH_KEY,
    Message,
    Store,
    message_key,
    segments_key,
)


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True))


class Crash(BaseException):
    """The worker process dying (kill -9): nothing after it runs, no handler sees it."""


class PerMessageCarrier(Carrier):
    """Fails the first submission of chosen messages as told; accepts everything else."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        super().__init__()
        self.failures = failures

    def submit(self, segment: SegmentSubmission) -> Accepted:
        self.refs.append(segment.client_ref)
        failure = self.failures.pop(segment.message_id, None)
        if failure is not None:
            raise failure
        return Accepted(carrier_id=f"c-{segment.client_ref}")


class DyingCarrier(Carrier):
    """Takes every segment, and the worker dies right after the carrier took the n-th."""

    def __init__(self, dies_after: int) -> None:
        super().__init__()
        self.dies_after = dies_after

    def submit(self, segment: SegmentSubmission) -> Accepted:
        accepted = super().submit(segment)
        if len(self.refs) == self.dies_after:
            raise Crash
        return accepted


def status(store: Store, message: Message) -> str:
    return store.fields(message.id)["status"]


class TestSendMany:
    def test_every_id_of_a_chunk_is_submitted_once(self, store: Store) -> None:
        """Each message of the chunk goes, each segment once; the chunk again sends nothing."""
        messages = [stored(store), stored(store, TWO_SEGMENTS, segments=2), stored(store)]
        carrier = Carrier()
        run, _ = sender(store, carrier)
        outcomes = run.send_many([m.id for m in messages])
        assert [o.status for o in outcomes] == ["accepted"] * 3
        assert [o.submitted for o in outcomes] == [1, 2, 1]
        assert [o.submitted for o in run.send_many([m.id for m in messages])] == [0, 0, 0]
        assert sorted(carrier.refs) == sorted(
            [f"{messages[0].id}:1", f"{messages[1].id}:1", f"{messages[1].id}:2",
             f"{messages[2].id}:1"]
        )  # fmt: skip

    def test_a_chunk_starts_in_one_round_trip(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The chunk's starts go in one pipeline, not one `begin_send` per message; an id
        nobody knows is answered `unknown` and the others go on."""
        messages = [stored(store), stored(store)]

        def one_by_one(*_: object) -> None:
            raise AssertionError("begin_send per message")

        monkeypatch.setattr(store, "begin_send", one_by_one)
        run, _ = sender(store, Carrier())
        outcomes = run.send_many([messages[0].id, "nope", messages[1].id])
        assert [o.status for o in outcomes] == ["accepted", "unknown", "accepted"]

    def test_one_failing_id_does_not_stop_the_others(self, store: Store) -> None:
        """A 5xx (durable retry of that id alone), a rejection and an unexpected error each
        stay with their own message; the rest of the chunk is accepted."""
        ok1, down, refused, broken, ok2 = (stored(store) for _ in range(5))
        carrier = PerMessageCarrier(
            {
                down.id: unavailable(),
                refused.id: CarrierRejectedError("bad number", code="invalid_destination"),
                broken.id: RuntimeError("a bug"),
            }
        )
        run, publisher = sender(store, carrier)
        outcomes = run.send_many([m.id for m in (ok1, down, refused, broken, ok2)])
        statuses = [o.status for o in outcomes]
        assert statuses == ["accepted", "submitting", "rejected", "error", "accepted"]
        retry = outcomes[1].retry_in
        assert publisher.later == [(SEND_SMS, [down.id], "normal", retry)]
        assert store.fields(down.id)["send_attempts"] == "1"
        assert store.fields(refused.id)["error_code"] == "invalid_destination"
        # The broken one is still watched: the reconciler sends it again.
        assert store.redis.zscore(SUBMIT_WATCH_KEY, broken.id) is not None
        assert [status(store, m) for m in (ok1, ok2)] == ["accepted", "accepted"]

    def test_a_redelivered_half_done_chunk_sends_nothing_twice(self, store: Store) -> None:
        """The worker dies after the carrier took the first segment of the second message: the
        redelivered chunk skips the first message and that claimed segment, and sends the
        rest (the second message's second segment, the third message) once."""
        first, second, third = stored(store), stored(store, TWO_SEGMENTS, segments=2), stored(store)
        ids = [first.id, second.id, third.id]
        dying = DyingCarrier(dies_after=2)
        run, _ = sender(store, dying)
        with pytest.raises(Crash):
            run.send_many(ids)
        assert dying.refs == [f"{first.id}:1", f"{second.id}:1"]
        carrier = Carrier()
        again, _ = sender(store, carrier)  # the redelivered task, in a new worker
        outcomes = again.send_many(ids)
        assert carrier.refs == [f"{second.id}:2", f"{third.id}:1"]
        assert [o.status for o in outcomes] == ["accepted", "submitting", "accepted"]
        # The claim held by the dead run is left for the reconciler's stale-claim rule.
        assert [s.status for s in store.segments(second.id, 2)] == ["submitting", "accepted"]
        all_refs = dying.refs + carrier.refs
        assert len(all_refs) == len(set(all_refs))

    def test_a_chunk_of_one_still_answers_per_id(self, store: Store) -> None:
        """An unknown id in a chunk is reported as such, the others go."""
        message = stored(store)
        run, _ = sender(store, Carrier())
        outcomes = run.send_many(["0" * 32, message.id])
        assert [o.status for o in outcomes] == ["unknown", "accepted"]


class TestPacing:
    @pytest.mark.parametrize("code", ["rate_limited", "circuit_open", "concurrency_limited"])
    def test_our_own_pacing_does_not_use_up_the_attempt_budget(
        self, store: Store, code: str
    ) -> None:
        """Waits our shared limit / breaker imposed are retried past MAX_SEND_ATTEMPTS, each
        no sooner than the wait, and counted as no attempt; then the message goes."""
        waits = MAX_SEND_ATTEMPTS + 3
        paced = [CarrierUnavailableError("wait", code=code, retry_after=0.25)] * waits
        message = stored(store)
        carrier = Carrier(*paced)
        run, publisher = sender(store, carrier)
        outcomes = [run.send(message.id) for _ in range(waits)]
        assert {o.status for o in outcomes} == {"submitting"}
        assert all((o.retry_in or 0) >= 0.25 for o in outcomes)
        assert "send_attempts" not in store.fields(message.id)
        assert len(publisher.later) == waits
        assert run.send(message.id).status == "accepted"

    def test_pacing_still_ends_when_validity_runs_out(self, store: Store) -> None:
        """Without a budget, validity still bounds the waiting: the message expires."""
        message = stored(store, validity_until=now_ms() + 60_000)
        paced = CarrierUnavailableError("wait", code="rate_limited", retry_after=1.0)
        carrier = Carrier(*[paced] * (MAX_SEND_ATTEMPTS + 1))
        run, _ = sender(store, carrier)
        for _ in range(MAX_SEND_ATTEMPTS + 1):
            assert run.send(message.id).status == "submitting"
        store.set_fields(message.id, {"validity_until": str(now_ms() - 1)})
        assert run.send(message.id).status == "expired"
        assert len(carrier.refs) == MAX_SEND_ATTEMPTS + 1

    def test_the_shared_rate_limit_of_a_routed_carrier_is_pacing(self, store: Store) -> None:
        """End to end with `RoutedCarrier`: a rate-limit refusal is retried, never counted."""
        fake = FakeCarrier("a")
        routed = RoutedCarrier(
            {"a": Gate(fake, rate=RateLimiter(store.redis, "rate:a", 0.001))},  # 1 per 1000 s
            RouteTable(config(RouteConfig(carriers=("a",)), names=("a",))),
            store.redis, public_url="http://api.test", max_wait=0.1, name="a",
        )  # fmt: skip
        first, second = stored(store), stored(store)
        run, _ = sender(store, routed)  # type: ignore[arg-type]
        assert run.send(first.id).status == "accepted"
        for _ in range(MAX_SEND_ATTEMPTS + 1):
            outcome = run.send(second.id)
            assert outcome.status == "submitting"
            assert (outcome.retry_in or 0) > 900
        assert "send_attempts" not in store.fields(second.id)
        assert [s.message_id for s in fake.submitted] == [first.id]

    def test_a_carrier_throttling_us_still_counts(self, store: Store) -> None:
        """A carrier's own 429 (or 5xx) is a failed attempt, as before."""
        message = stored(store)
        throttled = CarrierUnavailableError("429", code="throttled", retry_after=1.0)
        run, _ = sender(store, Carrier(throttled))
        run.send(message.id)
        assert store.fields(message.id)["send_attempts"] == "1"


def snapshot(store: Store, message_id: str) -> dict[str, Any]:
    """Everything a send step writes, without its timestamps and claim tokens."""
    redis = store.redis
    fields: dict[str, Any] = {
        k: v for k, v in store.fields(message_id).items() if not k.endswith("_at")
    }
    for name in [k for k in fields if k.endswith(":snap")]:  # a receipt's content, untimed
        content = orjson.loads(fields[name])
        fields[name] = {k: v for k, v in content.items() if not k.endswith("_at")}
    segments = {
        k: v
        for k, v in redis.hgetall(segments_key(message_id)).items()
        if "_at" not in k and ":claim" not in k
    }
    events = [{k: v for k, v in e.items() if k != "at"} for e in store.events(message_id)]
    watches = {
        key: redis.zscore(key, message_id) is not None
        for key in (SUBMIT_WATCH_KEY, DELIVERY_WATCH_KEY)
    }
    receipts = sorted(m for m in redis.zrange(RECEIPT_WATCH_KEY, 0, -1) if message_id in m)
    return {"fields": fields, "segments": segments, "events": events, "watches": watches,
            "receipts": receipts, "concat": redis.get(f"smsq:concat:{TO}")}  # fmt: skip


def untimed(message: Message | None) -> Message | None:
    """The message without the timestamps of its steps."""
    if message is None:
        return None
    return replace(message, extra={k: v for k, v in message.extra.items() if "_at" not in k})


def twin_stores(segments: int = 1, **fields: Any) -> tuple[Store, Store, str]:
    """Two stores holding the same message (and the same concat counter)."""
    one, two = (Store(fakeredis.FakeRedis(decode_responses=True)) for _ in range(2))
    message = stored(one, TWO_SEGMENTS, segments, created_at=1_795_000_000_000, **fields)
    two.create(message)
    return one, two, message.id


class TestBeginSend:
    @pytest.mark.parametrize("start", ["queued", "scheduled", "submitting", "accepted"])
    def test_does_what_load_transition_and_concat_reference_did(self, start: str) -> None:
        """The merged start of a send leaves the store as the three old steps did (for a
        concatenated message: one segment needs no reference)."""
        merged, old, message_id = twin_stores(
            segments=2, dlr=True, dlr_level=1, dlr_url="https://c.test/r"
        )
        for store in (merged, old):
            store.set_fields(message_id, {"status": start})
        begun = merged.begin_send(message_id, 8)
        assert begun is not None
        loaded = old.load(message_id)
        assert loaded is not None
        old.transition(message_id, {"queued", "scheduled"}, "submitting")
        reference = old.next_concat_reference(message_id, loaded.to, 8)
        assert begun.state == "started"
        assert begun.concat_ref == reference
        assert untimed(begun.message) == untimed(old.load(message_id))
        assert snapshot(merged, message_id) == snapshot(old, message_id)

    def test_reference_is_fixed_per_message_and_fresh_per_recipient(self, store: Store) -> None:
        """As `next_concat_reference`: fixed once chosen, the next message gets the next one."""
        first, second = (stored(store, TWO_SEGMENTS, 2) for _ in range(2))
        refs = [store.begin_send(m.id, 8) for m in (first, first, second)]
        one, again, other = (begun.concat_ref if begun else None for begun in refs)
        assert one is not None
        assert again == one
        assert other == (one + 1) % 256

    def test_a_single_segment_needs_no_reference(self, store: Store) -> None:
        """A message of one segment has no UDH: no reference, no counter written."""
        begun = store.begin_send(stored(store).id, 8)
        assert begun is not None
        assert (begun.state, begun.concat_ref) == ("started", None)
        assert store.redis.keys("smsq:concat:*") == []

    @pytest.mark.parametrize(
        ("fields", "state"),
        [({"status": "delivered"}, "final"), ({"validity_until": "1"}, "expired")],
    )
    def test_a_final_or_expired_message_is_left_alone(
        self, store: Store, fields: dict[str, str], state: str
    ) -> None:
        """Nothing changes; the caller finishes or expires it."""
        message = stored(store)
        store.set_fields(message.id, fields)
        before = snapshot(store, message.id)
        begun = store.begin_send(message.id, 8)
        assert begun is not None
        assert begun.state == state
        assert begun.message == store.load(message.id)
        assert snapshot(store, message.id) == before

    def test_an_unknown_message_is_none(self, store: Store) -> None:
        assert store.begin_send("0" * 32, 8) is None


class TestAcceptAndFinish:
    @pytest.mark.parametrize("level", [1, 2, 3])
    def test_does_what_accept_segment_and_finish_did(self, level: int) -> None:
        """Accepting the last segment and finishing, merged, opens the same receipt once."""
        merged, old, message_id = twin_stores(dlr=True, dlr_level=level, dlr_url="https://c.test/r")
        for store in (merged, old):
            store.begin_send(message_id, 8)
            assert store.claim_segment(message_id, 1)
        changed, parked, finished = merged.accept_and_finish(message_id, 1, "fake", "c-1", 1)
        old_changed, old_parked = old.accept_segment(message_id, 1, "fake", "c-1")
        assert (changed, parked, finished) == (old_changed, old_parked, old.finish(message_id, 1))
        assert finished == Finished("accepted", 1 if level != 2 else 0)
        assert snapshot(merged, message_id) == snapshot(old, message_id)
        assert merged.segment_for_carrier_id("fake", "c-1") == (message_id, 1)
        assert merged.accept_and_finish(message_id, 1, "fake", "c-1", 1)[2] == Finished(
            "accepted", 0
        )  # finished once: no second receipt

    def test_receipts_parked_for_the_id_come_back_and_nothing_is_finished(
        self, store: Store
    ) -> None:
        """The caller applies a parked receipt before finishing (the old order)."""
        message = stored(store, segments=1)
        store.claim_segment(message.id, 1)
        assert store.park_receipt("fake", "c-1", {"status": "delivered"}) is None
        changed, parked, finished = store.accept_and_finish(message.id, 1, "fake", "c-1", 1)
        assert (changed, parked, finished) == (True, [{"status": "delivered"}], None)
        assert "submit_outcome" not in store.fields(message.id)

    def test_an_open_segment_leaves_the_submission_unfinished(self, store: Store) -> None:
        """The last segment accepted while an earlier one is still pending: not finished."""
        message = stored(store, TWO_SEGMENTS, segments=2)
        store.claim_segment(message.id, 2)
        assert store.accept_and_finish(message.id, 2, "fake", "c-2", 2)[2] == Finished(None)
        assert "submit_outcome" not in store.fields(message.id)


def test_a_parked_receipt_is_applied_before_the_send_finishes(store: Store) -> None:
    """A resend whose first carrier id already got its terminal receipt: delivered, finished."""
    message = stored(store, dlr=True, dlr_level=3, dlr_url="https://c.test/r")
    store.park_receipt("fake", f"c-{message.id}:1", {"status": "delivered"})
    run, _ = sender(store, IdempotentCarrier())
    assert run.send(message.id).status == "accepted"
    fields = store.redis.hgetall(message_key(message.id))
    assert (fields["status"], fields["submit_outcome"]) == ("delivered", "accepted")
