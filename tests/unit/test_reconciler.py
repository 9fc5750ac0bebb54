"""The reconciler and receipt replay, on fakeredis: what stopped moving is moved again, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
from celery import Celery

from tests.unit.test_sending import Carrier, GatewayCarrier, IdempotentCarrier
from worker.carriers.base import CarrierReceipt
from worker.clock import now_ms
from worker.contract import DRAIN_CARRIER_RECEIPTS, POST_RECEIPT, SEND_SMS, SegmentStatus
from worker.inbound import ReceiptIntake
from worker.queueing import CeleryPublisher
from worker.receipts import dead_letters, replay
from worker.receipts.intake import accept
from worker.reconciler import Reconciler, ReconcilerConfig
from worker.sending import Sender
from worker.store import (
    DEAD_LETTER_KEY,
    DELIVERY_WATCH_KEY,
    RECEIPT_WATCH_KEY,
    SUBMIT_WATCH_KEY,
    Message,
    Store,
    new_message_id,
)
from worker.store.inbox import Inbox

TO = "+14155552671"
CONFIG = ReconcilerConfig(
    grace=10, claim_lease=30, receipt_deadline=3600, ack_deadline=600, backlog=5
)


@dataclass
class Publisher:
    jobs: list[tuple[str, list[Any], str]] = field(default_factory=list)

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.jobs.append((task, list(args), queue))

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        raise AssertionError("the reconciler publishes now, never later")


class World:
    """A store, a recording publisher and a reconciler whose clock runs `ahead` seconds."""

    def __init__(self) -> None:
        self.store = Store(fakeredis.FakeRedis(decode_responses=True))
        self.publisher = Publisher()
        self.ahead = 0.0
        self.reconciler = Reconciler(
            self.store, self.publisher, CONFIG, clock=lambda: now_ms() + int(self.ahead * 1000)
        )

    def message(self, **fields: Any) -> Message:
        message = Message(id=new_message_id(), to=TO, sender="smsq", content="hi", segments=1)
        message = Message(**{**message_fields(message), **fields})
        self.store.create(message)
        return message

    def run(self, ahead: float) -> dict[str, int]:
        self.ahead = ahead
        return self.reconciler.run_once().counts

    def take_jobs(self) -> list[tuple[str, list[Any], str]]:
        jobs, self.publisher.jobs = self.publisher.jobs, []
        return jobs


def message_fields(message: Message) -> dict[str, Any]:
    return {name: getattr(message, name) for name in Message.__dataclass_fields__}


@pytest.fixture
def world() -> World:
    return World()


class TestLostTasks:
    def test_a_queued_message_whose_task_was_lost_is_published_again(self, world: World) -> None:
        """Stored but never queued: published once past the grace, not again until backoff."""
        message = world.message()
        assert world.run(ahead=5) == {}
        assert world.run(ahead=11) == {"republished_send": 1}
        assert world.take_jobs() == [(SEND_SMS, [message.id], "normal")]
        assert world.run(ahead=15) == {}
        assert world.run(ahead=32) == {"republished_send": 1}
        assert world.store.counters()["republished_send"] == 2

    def test_a_backlogged_lane_is_left_alone(self, world: World) -> None:
        """While the lane's queue is longer than `backlog`, its tasks are still in it."""
        message = world.message(priority="bulk")
        world.store.redis.rpush("bulk", *[f"task{i}" for i in range(6)])
        assert world.run(ahead=11) == {"busy": 1}
        world.store.redis.delete("bulk")
        assert world.run(ahead=22) == {"republished_send": 1}
        assert world.take_jobs() == [(SEND_SMS, [message.id], "bulk")]

    def test_a_scheduled_message_is_not_looked_at_before_it_is_due(self, world: World) -> None:
        """The watch score of a scheduled message is its send time."""
        world.message(status="scheduled", send_at=now_ms() + 60_000)
        assert world.run(ahead=65) == {}
        assert world.run(ahead=71) == {"republished_send": 1}

    def test_a_retry_waiting_in_the_schedule_is_not_republished(self, world: World) -> None:
        """A carrier retry due later moves the message's check to after that."""
        message = world.message()
        world.store.expect_progress(message.id, now_ms() + 120_000)
        assert world.run(ahead=60) == {}

    def test_final_messages_leave_the_watch_list(self, world: World) -> None:
        """A message that reached its end is dropped, not republished."""
        message = world.message()
        world.store.transition(message.id, {"queued"}, "cancelled")
        assert world.store.redis.zscore(SUBMIT_WATCH_KEY, message.id) is None
        assert world.run(ahead=11) == {}


class TestStaleClaims:
    def claimed(self, world: World) -> Message:
        message = world.message()
        world.store.transition(message.id, {"queued"}, "submitting")
        assert world.store.claim_segment(message.id, 1)
        return message

    def test_a_fresh_claim_is_left_to_its_run(self, world: World) -> None:
        """A claim younger than the lease may still be in flight: it stays claimed."""
        message = self.claimed(world)
        world.run(ahead=20)
        assert world.store.segments(message.id, 1)[0].status == "submitting"

    def test_an_old_claim_is_resent_once_with_the_same_reference(self, world: World) -> None:
        """A dead run's claim becomes unknown; a carrier honouring references gets it again."""
        message = self.claimed(world)
        assert world.run(ahead=31) == {"republished_send": 1}
        assert world.store.counters()["stale_claim"] == 1
        carrier = IdempotentCarrier()
        Sender(world.store, carrier, world.publisher, "http://api.test").send(message.id)
        assert carrier.refs == [f"{message.id}:1"]
        assert world.store.fields(message.id)["status"] == "accepted"

    def test_an_old_claim_is_never_resent_blindly(self, world: World) -> None:
        """Without idempotency at the carrier the segment stays unknown and the message fails."""
        message = self.claimed(world)
        world.run(ahead=31)
        carrier = Carrier()
        Sender(world.store, carrier, world.publisher, "http://api.test").send(message.id)
        assert carrier.refs == []
        fields = world.store.fields(message.id)
        assert (fields["status"], fields["unknown_outcomes"]) == ("failed", "1")


class TestMissingTerminalReceipts:
    def accepted(self, world: World) -> Message:
        message = world.message(dlr=True, dlr_level=3, dlr_url="https://client.test/r")
        world.store.claim_segment(message.id, 1)
        world.store.record_accepted(message.id, 1, "fake", "c-1")
        world.store.finish(message.id, 1)
        world.store.close_receipt(message.id, 1, "sent")
        return message

    def test_expire_synthetically_after_the_deadline(self, world: World) -> None:
        """No terminal receipt within the deadline: expired, with a level-2 receipt."""
        message = self.accepted(world)
        assert world.run(ahead=3599) == {}
        assert world.run(ahead=3601) == {"synthetic_expired": 1}
        assert world.store.fields(message.id)["status"] == "expired"
        assert world.store.segments(message.id, 1)[0].error_code == "no_receipt"
        assert world.take_jobs() == [(POST_RECEIPT, [message.id, 2], "dlr")]
        assert world.store.redis.zscore(DELIVERY_WATCH_KEY, message.id) is None

    def test_a_late_real_receipt_changes_nothing_after(self, world: World) -> None:
        """The synthetic state is final: a receipt arriving later does not move it."""
        message = self.accepted(world)
        world.run(ahead=3601)
        late = world.store.apply_receipt(message.id, 1, "delivered", None, None)
        assert (late.segment_changed, late.receipt_level) == (False, 0)
        assert world.store.fields(message.id)["status"] == "expired"


class TestAwaitingTheSmsc:
    def sent(self, world: World) -> Message:
        message = world.message(dlr=True, dlr_level=3, dlr_url="https://client.test/r")
        Sender(world.store, GatewayCarrier(), world.publisher, "http://api.test").send(message.id)
        assert world.store.segments(message.id, 1)[0].status == "sent"
        return message

    def test_a_segment_awaiting_the_smsc_is_not_sent_again(self, world: World) -> None:
        """Queued at the gateway: no send task is published, however long the wait."""
        self.sent(world)
        assert world.run(ahead=11) == {"awaiting_ack": 1}
        assert world.run(ahead=300) == {}  # next look: at the deadline
        assert world.take_jobs() == []

    def test_no_answer_in_time_fails_the_submission(self, world: World) -> None:
        """No SMSC answer within `ack_deadline`: the segment becomes `unknown`, the submission
        fails with `no_smsc_answer`, and its level-1 receipt goes out; a late answer changes
        nothing."""
        message = self.sent(world)
        world.run(ahead=11)
        assert world.run(ahead=599) == {}
        # (the receipt it opens is due at once for this clock: published twice, harmlessly)
        assert world.run(ahead=601)["no_smsc_answer"] == 1
        fields = world.store.fields(message.id)
        assert (fields["status"], fields["submit_outcome"]) == ("failed", "failed")
        assert world.store.segments(message.id, 1)[0].error_code == "no_smsc_answer"
        jobs = world.take_jobs()
        assert jobs
        assert all(job == (POST_RECEIPT, [message.id, 1], "dlr") for job in jobs)
        assert world.store.counters()["no_smsc_answer"] == 1
        world.store.close_receipt(message.id, 1, "sent")
        assert world.run(ahead=1300) == {}
        late = world.store.apply_receipt(message.id, 1, "delivered", None, None)
        assert (late.message_status, late.receipt_levels) == ("failed", ())

    def test_an_answered_segment_leaves_the_watch_list(self, world: World) -> None:
        """The SMSC's answer finishes the submission: nothing is left to reconcile."""
        message = self.sent(world)
        world.store.apply_receipt(message.id, 1, "accepted", None, None)
        assert world.store.redis.zscore(SUBMIT_WATCH_KEY, message.id) is None
        world.store.close_receipt(message.id, 1, "sent")
        assert world.run(ahead=700) == {}


class TestClientReceipts:
    def opened(self, world: World, level: int = 1, dlr_level: int = 1) -> Message:
        message = world.message(dlr=True, dlr_level=dlr_level, dlr_url="https://client.test/r")
        assert world.store.open_receipt(message.id, level)
        return message

    def test_an_open_receipt_whose_task_was_lost_is_published_again(self, world: World) -> None:
        """Opened but never queued (or its retry lost): published again past the grace."""
        message = self.opened(world)
        world.store.redis.zrem(SUBMIT_WATCH_KEY, message.id)
        assert world.run(ahead=11) == {"republished_receipt": 1}
        assert world.take_jobs() == [(POST_RECEIPT, [message.id, 1], "dlr")]

    def test_a_receipt_being_sent_waits_for_its_lease(self, world: World) -> None:
        """Claimed with a 60 s lease: left alone until the lease and the grace passed."""
        message = self.opened(world)
        world.store.redis.zrem(SUBMIT_WATCH_KEY, message.id)
        assert world.store.claim_receipt(message.id, 1, lease_ms=60_000) == 1
        assert world.run(ahead=65) == {}
        assert world.run(ahead=71) == {"republished_receipt": 1}

    def test_a_parked_level_two_waits_for_level_one(self, world: World) -> None:
        """Level 2 of a level-3 message is not republished while level 1 is pending."""
        message = self.opened(world, level=2, dlr_level=3)
        world.store.redis.zrem(SUBMIT_WATCH_KEY, message.id)
        world.store.open_receipt(message.id, 1)
        assert world.store.claim_receipt(message.id, 2) == -1
        counts = world.run(ahead=11)
        assert world.take_jobs() == [(POST_RECEIPT, [message.id, 1], "dlr")]
        assert counts == {"republished_receipt": 1, "in_flight": 1}

    def test_a_done_receipt_leaves_the_watch_list(self, world: World) -> None:
        """Closing a receipt removes it from the watch list."""
        message = self.opened(world)
        world.store.close_receipt(message.id, 1, "sent")
        assert world.store.redis.zscore(RECEIPT_WATCH_KEY, f"{message.id}:1") is None

    def test_a_scheduled_retry_cannot_be_overtaken(self, world: World) -> None:
        """A receipt whose next attempt is due later refuses an early claim."""
        message = self.opened(world)
        world.store.claim_receipt(message.id, 1)
        world.store.release_receipt(message.id, 1, due_ms=now_ms() + 30_000)
        assert world.store.claim_receipt(message.id, 1) == 0


class TestReplay:
    def dead(self, world: World) -> Message:
        message = world.message(dlr=True, dlr_level=1, dlr_url="https://client.test/r")
        world.store.open_receipt(message.id, 1)
        world.store.claim_receipt(message.id, 1)
        world.store.receipt_attempt(message.id, 1)
        world.store.redis.zadd(DEAD_LETTER_KEY, {f"{message.id}:1": now_ms()})
        world.store.close_receipt(message.id, 1, "dead")
        return message

    def test_replays_a_dead_lettered_receipt(self, world: World) -> None:
        """Replay reopens it with a fresh schedule, queues it and empties the dead letters."""
        message = self.dead(world)
        assert dead_letters(world.store) == [f"{message.id}:1"]
        assert replay(world.store, world.publisher, dead_letters(world.store)) == 1
        assert world.take_jobs() == [(POST_RECEIPT, [message.id, 1], "dlr")]
        fields = world.store.fields(message.id)
        assert (fields["rcpt:1:state"], fields["rcpt:1:base"]) == ("open", "1")
        assert dead_letters(world.store) == []
        assert world.store.claim_receipt(message.id, 1) == 1  # same seq

    def test_replays_every_opened_level_of_a_message(self, world: World) -> None:
        """A bare message id replays the levels it has; one never opened is skipped."""
        message = self.dead(world)
        assert replay(world.store, world.publisher, [message.id, new_message_id()]) == 1

    def test_selects_dead_letters_by_time(self, world: World) -> None:
        """Only receipts dead-lettered within the range are chosen."""
        message = self.dead(world)
        assert dead_letters(world.store, until_ms=now_ms() - 60_000) == []
        assert dead_letters(world.store, since_ms=now_ms() - 60_000) == [f"{message.id}:1"]


class TestRaces:
    def test_a_receipt_before_its_carrier_id_is_applied_when_the_id_is_stored(
        self, world: World
    ) -> None:
        """A receipt for an id not yet stored is parked; the resend answered with that id
        (the carrier's idempotency) applies it."""
        message = world.message(dlr=True, dlr_level=2, dlr_url="https://client.test/r")
        receipt = CarrierReceipt(carrier_id=f"c-{message.id}:1", status=SegmentStatus.DELIVERED)
        assert ReceiptIntake(world.store, world.publisher).apply("fake", receipt) is None
        Sender(world.store, IdempotentCarrier(), world.publisher, "http://api.test").send(
            message.id
        )
        assert world.store.fields(message.id)["status"] == "delivered"
        assert world.take_jobs() == [(POST_RECEIPT, [message.id, 2], "dlr")]

    def test_a_receipt_overtaking_a_dead_runs_finish_still_yields_level_one(
        self, world: World
    ) -> None:
        """The run died after storing the carrier id; the receipt made the message final; the
        reconciler's resend finishes the submission and opens the level-1 receipt."""
        message = world.message(dlr=True, dlr_level=3, dlr_url="https://client.test/r")
        world.store.transition(message.id, {"queued"}, "submitting")
        world.store.claim_segment(message.id, 1)
        world.store.record_accepted(message.id, 1, "fake", "c-1")
        world.store.apply_receipt(message.id, 1, "delivered", None, None)
        assert world.run(ahead=11)["republished_send"] == 1
        world.take_jobs()
        Sender(world.store, Carrier(), world.publisher, "http://api.test").send(message.id)
        assert world.store.fields(message.id)["submit_outcome"] == "accepted"
        assert world.take_jobs() == [(POST_RECEIPT, [message.id, 1], "dlr")]


class TestInbox:
    def test_requests_whose_drain_was_lost_get_a_drain_again(self, world: World) -> None:
        """Carrier requests wait in the inbox until applied; if the drain task planned for
        them is lost (kombu's pop window), the reconciler starts one: one, for all of them."""
        client = world.store.redis
        publisher = CeleryPublisher(Celery("unit", broker="memory://"), client, direct=True)
        inbox = Inbox(client)
        entries = [accept(inbox, publisher, "sim", {"body": "e30="}) for _ in range(3)]
        assert client.llen("carrier-dlr") == 1  # one drain for all three
        client.delete("carrier-dlr")  # the task is lost
        assert world.run(ahead=11) == {"republished_inbound": 1}
        assert world.take_jobs() == [(DRAIN_CARRIER_RECEIPTS, [], "carrier-dlr")]
        assert world.run(ahead=12) == {"busy": 1}  # planned again just now: not again
        inbox.done(entries)
        assert world.run(ahead=30) == {}

    def test_a_running_drain_is_left_to_its_work(self, world: World) -> None:
        """While a drain holds the inbox (it renews its hold as it works), overdue requests
        are its own: nothing else is started."""
        client = world.store.redis
        publisher = CeleryPublisher(Celery("unit", broker="memory://"), client, direct=True)
        inbox = Inbox(client)
        accept(inbox, publisher, "sim", {"body": "e30="})
        lease = inbox.lease("drain-1", now_ms(), 10, 60_000, 15_000, keep=True)
        assert lease.state == "items"
        assert world.run(ahead=70) == {"busy": 1}
