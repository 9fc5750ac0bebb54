"""Sending one message: claims, the carrier retry policy and the unknown-outcome rule."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from worker.carriers.base import Accepted, CarrierReceipt, InboundRequest, SegmentSubmission
from worker.clock import now_ms
from worker.contract import (
    MESSAGE_STATUS_WORDS,
    POST_RECEIPT,
    SEND_SMS,
    MessageStatus,
    SegmentStatus,
)
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
)
from worker.inbound import ReceiptIntake
from worker.receipts.payload import build_payload
from worker.receipts.tokens import receipt_key, segment_token
from worker.sending import MAX_SEND_ATTEMPTS, RETRY_CAP_SECONDS, Sender, retry_delay
from worker.settings import get_settings
from worker.store import SUBMIT_WATCH_KEY, Message, Store, new_message_id
from worker.store.receipts import Claim, ReceiptStore

TO = "+14155552671"
TWO_SEGMENTS = "The quick brown fox jumps over the lazy dog. " * 5  # 225 septets


@dataclass
class Publisher:
    """Records what would be published now and later."""

    now: list[tuple[str, list[Any], str]] = field(default_factory=list)
    later: list[tuple[str, list[Any], str, float]] = field(default_factory=list)

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.now.append((task, list(args), queue))

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        self.later.append((task, list(args), queue, delay))


class Carrier:
    """Answers each submission with the next scripted outcome (then accepts everything)."""

    name = "fake"
    submits_whole_text = False
    honours_client_ref = False
    acknowledges_by_receipt = False

    def __init__(self, *outcomes: CarrierError | None) -> None:
        self.outcomes = list(outcomes)
        self.refs: list[str] = []
        self.receipt_urls: list[str] = []

    def submit(self, segment: SegmentSubmission) -> Accepted:
        self.refs.append(segment.client_ref)
        self.receipt_urls.append(segment.receipt_url)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return Accepted(carrier_id=f"c-{segment.client_ref}")

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        return []


class IdempotentCarrier(Carrier):
    """A carrier that treats the client reference as an idempotency key."""

    honours_client_ref = True


class GatewayCarrier(Carrier):
    """A gateway like Kannel: its acceptance only queues; the SMSC answers with a receipt."""

    acknowledges_by_receipt = True

    def submit(self, segment: SegmentSubmission) -> Accepted:
        accepted = super().submit(segment)
        return Accepted(accepted.carrier_id, awaiting_ack=True)


def unavailable(retry_after: float | None = None) -> CarrierUnavailableError:
    return CarrierUnavailableError("503", code="unavailable", retry_after=retry_after)


def no_answer() -> CarrierUnknownOutcomeError:
    return CarrierUnknownOutcomeError("no answer from carrier: ReadTimeout", code="no_answer")


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True))


def stored(store: Store, content: str = "hello", segments: int = 1, **fields: Any) -> Message:
    message = Message(
        id=new_message_id(), to=TO, sender="smsq", content=content, segments=segments, **fields
    )
    store.create(message)
    return message


def sender(store: Store, carrier: Carrier) -> tuple[Sender, Publisher]:
    publisher = Publisher()
    return Sender(store, carrier, publisher, "http://api.test"), publisher


class TestSubmission:
    def test_each_segment_goes_once_with_its_client_reference(self, store: Store) -> None:
        """Segments are submitted as `message_id:seq`; a redelivered task submits nothing."""
        message = stored(store, TWO_SEGMENTS, segments=2)
        carrier = Carrier()
        run, _ = sender(store, carrier)
        assert run.send(message.id).status == "accepted"
        assert run.send(message.id).submitted == 0
        assert carrier.refs == [f"{message.id}:1", f"{message.id}:2"]

    def test_each_segment_s_receipt_url_carries_its_token(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The carrier is told `…/carriers/{name}/dlr?ref={id}:{seq}&token=…`, one per segment."""
        monkeypatch.setenv("SMSQ_SECRET_KEY", "sending-test-key")
        get_settings.cache_clear()
        message = stored(store, TWO_SEGMENTS, segments=2)
        carrier = Carrier()
        run, _ = sender(store, carrier)
        run.send(message.id)
        key = receipt_key("sending-test-key")
        assert key is not None
        assert carrier.receipt_urls == [
            f"http://api.test/carriers/fake/dlr?ref={ref}&token={segment_token(key, ref)}"
            for ref in (f"{message.id}:1", f"{message.id}:2")
        ]

    def test_finishing_opens_and_queues_the_level_one_receipt_once(self, store: Store) -> None:
        """The submission outcome opens the level-1 receipt in the same step, once."""
        message = stored(store, dlr=True, dlr_level=3, dlr_url="https://client.test/r")
        run, publisher = sender(store, Carrier())
        run.send(message.id)
        run.send(message.id)
        assert publisher.now == [(POST_RECEIPT, [message.id, 1], "dlr")]
        assert store.fields(message.id)["rcpt:1:state"] == "open"

    def test_a_rejection_fails_at_once_and_sends_no_later_segment(self, store: Store) -> None:
        """A 4xx rejects the message with the carrier's code; the next segment never goes."""
        message = stored(store, TWO_SEGMENTS, segments=2)
        carrier = Carrier(CarrierRejectedError("bad number", code="invalid_destination"))
        run, publisher = sender(store, carrier)
        assert run.send(message.id).status == "rejected"
        assert carrier.refs == [f"{message.id}:1"]
        assert store.fields(message.id)["error_code"] == "invalid_destination"
        assert publisher.later == []


class TestCarrierRetries:
    def test_unavailable_carrier_is_retried_later_through_the_scheduler(self, store: Store) -> None:
        """A 503 gives the claim back and schedules a durable retry the reconciler waits for."""
        message = stored(store)
        run, publisher = sender(store, Carrier(unavailable()))
        before = now_ms()
        outcome = run.send(message.id)
        assert outcome.status == "submitting"
        assert outcome.retry_in is not None
        assert publisher.later == [(SEND_SMS, [message.id], "normal", outcome.retry_in)]
        assert store.segments(message.id, 1)[0].status == "pending"
        due = store.redis.zscore(SUBMIT_WATCH_KEY, message.id)
        assert due is not None
        assert due >= before + int(outcome.retry_in * 1000)
        assert run.send(message.id).status == "accepted"

    def test_retry_after_is_honoured(self, store: Store) -> None:
        """A 429's Retry-After is the least the next attempt waits."""
        message = stored(store)
        run, _ = sender(store, Carrier(unavailable(retry_after=42.0)))
        assert run.send(message.id).retry_in == 42.0

    def test_gives_up_after_the_attempt_budget(self, store: Store) -> None:
        """After MAX_SEND_ATTEMPTS transient failures the message fails, with the last code."""
        message = stored(store)
        run, publisher = sender(store, Carrier(*[unavailable()] * MAX_SEND_ATTEMPTS))
        outcomes = [run.send(message.id).status for _ in range(MAX_SEND_ATTEMPTS)]
        assert outcomes == ["submitting"] * (MAX_SEND_ATTEMPTS - 1) + ["failed"]
        assert len(publisher.later) == MAX_SEND_ATTEMPTS - 1
        assert store.fields(message.id)["error_code"] == "unavailable"

    @pytest.mark.parametrize("attempt", [1, 2, 5, 9, 30])
    def test_backoff_is_full_jitter_under_a_growing_cap(self, attempt: int) -> None:
        """Delays spread over [0, min(cap, 2^(n-1))]."""
        rng = random.Random(attempt)
        delays = [retry_delay(attempt, None, rng) for _ in range(500)]
        cap = min(RETRY_CAP_SECONDS, 2.0 ** (attempt - 1))
        assert 0 <= min(delays) < cap / 10
        assert cap * 0.9 < max(delays) <= cap


class TestUnknownOutcome:
    def test_is_resent_with_the_same_reference_when_the_carrier_honours_it(
        self, store: Store
    ) -> None:
        """No answer: counted, retried later, resent as the same `message_id:seq`."""
        message = stored(store)
        carrier = IdempotentCarrier(no_answer())
        run, publisher = sender(store, carrier)
        assert run.send(message.id).status == "submitting"
        assert store.segments(message.id, 1)[0].status == "unknown"
        assert [job[0] for job in publisher.later] == [SEND_SMS]
        assert run.send(message.id).status == "accepted"
        assert carrier.refs == [f"{message.id}:1", f"{message.id}:1"]
        assert store.counters() == {"unknown_outcome": 1}
        assert store.fields(message.id)["unknown_outcomes"] == "1"

    def test_is_never_resent_when_the_carrier_does_not_honour_references(
        self, store: Store
    ) -> None:
        """No answer from a carrier without idempotency: fails as unknown, never sent again."""
        message = stored(store, dlr=True, dlr_level=1, dlr_url="https://client.test/r")
        carrier = Carrier(no_answer())
        run, publisher = sender(store, carrier)
        assert run.send(message.id).status == "failed"
        run.send(message.id)
        assert carrier.refs == [f"{message.id}:1"]
        assert publisher.later == []
        assert store.segments(message.id, 1)[0].error_code == "unknown_outcome"
        assert publisher.now == [(POST_RECEIPT, [message.id, 1], "dlr")]

    def test_other_segments_still_go(self, store: Store) -> None:
        """An unknown first segment does not hold back the second."""
        message = stored(store, TWO_SEGMENTS, segments=2)
        carrier = IdempotentCarrier(no_answer())
        run, _ = sender(store, carrier)
        run.send(message.id)
        states = [s.status for s in store.segments(message.id, 2)]
        assert states == ["unknown", "accepted"]


class TestValidity:
    def test_partly_sent_message_fails_the_rest_when_validity_ran_out(self, store: Store) -> None:
        """Validity over after segment 1 went: segment 2 is not sent and the submission ends."""
        message = stored(store, TWO_SEGMENTS, segments=2, validity_until=1)
        store.claim_segment(message.id, 1)
        store.record_accepted(message.id, 1, "fake", "c-1")
        carrier = Carrier()
        run, _ = sender(store, carrier)
        assert run.send(message.id).status == "failed"
        assert carrier.refs == []
        assert [s.status for s in store.segments(message.id, 2)] == ["accepted", "failed"]


class TestRecording:
    def test_a_late_acceptance_never_moves_a_segment_backwards(self, store: Store) -> None:
        """Recording the carrier id after the terminal receipt leaves the segment delivered."""
        message = stored(store)
        store.claim_segment(message.id, 1)
        assert store.record_accepted(message.id, 1, "fake", "c-1")
        store.finish(message.id, 1)
        store.apply_receipt(message.id, 1, "delivered", None, None)
        assert not store.record_accepted(message.id, 1, "fake", "c-1")
        assert store.segments(message.id, 1)[0].status == "delivered"
        assert store.segment_for_carrier_id("fake", "c-1") == (message.id, 1)


class TestGatewayCarriers:
    """A gateway's acceptance is not the SMSC's: level 1 waits for the SMSC's answer."""

    def answer(self, store: Store, publisher: Publisher, carrier_id: str, status: str) -> None:
        receipt = CarrierReceipt(carrier_id, SegmentStatus(status), "0x00000045", "NACK/0x45/")
        assert ReceiptIntake(store, publisher).apply("fake", receipt)

    def test_queued_at_the_gateway_the_submission_stays_open(self, store: Store) -> None:
        """After the gateway's acceptance the segment is `sent`, nothing is reported, and a
        redelivered task submits nothing."""
        message = stored(store, TWO_SEGMENTS, segments=2, dlr=True, dlr_url="https://c.test/r")
        carrier = GatewayCarrier()
        run, publisher = sender(store, carrier)
        assert run.send(message.id).status == "submitting"
        assert [s.status for s in store.segments(message.id, 2)] == ["sent", "sent"]
        assert run.send(message.id).submitted == 0
        assert (len(carrier.refs), publisher.now, publisher.later) == (2, [], [])

    @pytest.mark.parametrize(
        ("answer", "outcome"), [("accepted", "accepted"), ("rejected", "rejected")]
    )
    def test_the_smscs_answer_is_the_level_one_receipt(
        self, store: Store, answer: str, outcome: str
    ) -> None:
        """The SMSC's acceptance or refusal, as a receipt, finishes the submission and sends
        the level-1 receipt: a refusal is `rejected` (final), not a level-2 `undelivered`."""
        message = stored(store, dlr=True, dlr_level=3, dlr_url="https://c.test/r")
        run, publisher = sender(store, GatewayCarrier())
        run.send(message.id)
        self.answer(store, publisher, f"c-{message.id}:1", answer)
        assert publisher.now == [(POST_RECEIPT, [message.id, 1], "dlr")]
        fields = store.fields(message.id)
        assert (fields["submit_outcome"], fields["status"]) == (outcome, outcome)
        (claim,) = ReceiptStore(store.redis).claim([(message.id, 1)], now_ms(), 10_000)
        assert isinstance(claim, Claim)
        payload = build_payload(claim)
        assert (payload["status"], payload["message_status"]) == (
            outcome, MESSAGE_STATUS_WORDS[MessageStatus(outcome)],
        )  # fmt: skip
        if outcome == "rejected":
            assert payload["error"] == {"code": "0x00000045", "message": "NACK/0x45/"}
