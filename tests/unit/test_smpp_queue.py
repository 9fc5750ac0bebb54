"""The hand-over to the SMPP connector (`worker.smpp.queue`) and what it stores (`outcomes`)."""

from __future__ import annotations

import fakeredis
import pytest
from redis.crc import key_slot

from tests.unit.test_receipt_intake_auth import Jobs
from worker.carriers.base import CarrierReceipt
from worker.contract import MessageStatus, SegmentStatus
from worker.inbound import Parking, ReceiptIntake
from worker.smpp import queue
from worker.smpp.inbound import MobileOriginated
from worker.smpp.outcomes import Answer, Batch, Outcomes
from worker.smpp.queue import SegmentQueue
from worker.store import Message, Store
from worker.store.keys import smpp_ref_key, smpp_stream_key


def submitting(message_id: str) -> Message:
    """A one-segment message being submitted."""
    return Message(
        id=message_id, to="+4915112345678", sender="smsq", content="hi", segments=1,
        status=MessageStatus.SUBMITTING,
    )  # fmt: skip


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def raw(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


class TestSegmentQueue:
    def test_a_segment_queued_again_keeps_its_first_entry(
        self, server: fakeredis.FakeServer
    ) -> None:
        """Queueing the same ref again (a run that lost Redis's reply retries) adds nothing
        and returns the first entry; another segment gets its own."""
        client = raw(server)
        first = queue.enqueue(client, "up", "m1:1", b"pdu", "otp")
        assert queue.enqueue(client, "up", "m1:1", b"pdu", "otp") == first
        assert queue.enqueue(client, "up", "m1:2", b"pdu", "otp") != first
        assert client.xlen(smpp_stream_key("up", "otp")) == 2

    def test_a_segment_s_marker_shares_its_stream_s_cluster_slot(self) -> None:
        """The enqueue script touches both keys, which a Redis Cluster allows in one slot only."""
        stream = smpp_stream_key("up", "normal")
        marker = smpp_ref_key(stream, "m1:1")
        assert marker.startswith("smsq:")
        assert key_slot(marker.encode()) == key_slot(stream.encode())

    def test_a_dead_connectors_entries_are_taken_over(self, server: fakeredis.FakeServer) -> None:
        """Entries a stopped connector read: those it never wrote are sent by the next one,
        those it wrote come back marked (an unknown outcome); its done ones are gone."""
        client = raw(server)
        for n in range(3):
            queue.enqueue(client, "up", f"m{n}:1", b"pdu%d" % n, "normal")
        dead = SegmentQueue(client, "up", "dead")
        dead.create_group()
        first, second, third = dead.read(10, 0)
        dead.mark_written([first, second])
        dead.done([second])
        alive = SegmentQueue(client, "up", "alive")
        alive.heartbeat()
        taken = {e.ref: e.written for e in alive.orphans()}
        assert taken == {"m0:1": True, "m2:1": False}
        assert alive.orphans() == []  # taken once; the dead consumer is forgotten
        assert (first.segment, third.pdu) == (("m0", 1), b"pdu2")

    def test_otps_are_read_before_a_backlog(self, server: fakeredis.FakeServer) -> None:
        """A campaign queued first does not hold an OTP back: the OTP lane is read first,
        then normal, then bulk (an unknown lane counts as normal)."""
        client = raw(server)
        for n, lane in enumerate(["bulk", "bulk", "normal", "otp", "weird"]):
            queue.enqueue(client, "up", f"m{n}:1", b"pdu", lane)
        segments = SegmentQueue(client, "up", "me")
        segments.create_group()
        assert [e.ref for e in segments.read(3, 0)] == ["m3:1", "m2:1", "m4:1"]
        assert [(e.ref, e.lane) for e in segments.read(10, 0)] == [
            ("m0:1", "bulk"), ("m1:1", "bulk"),
        ]  # fmt: skip

    def test_a_live_connectors_entries_stay_its_own(self, server: fakeredis.FakeServer) -> None:
        client = raw(server)
        queue.enqueue(client, "up", "m1:1", b"pdu", "normal")
        busy = SegmentQueue(client, "up", "busy")
        busy.create_group()
        busy.heartbeat()
        assert len(busy.read(10, 0)) == 1
        assert SegmentQueue(client, "up", "other").orphans() == []

    def test_a_throttled_entry_is_unmarked(self, server: fakeredis.FakeServer) -> None:
        """Answered (throttled) means not sent: unmarked, it is sent again after a death."""
        client = raw(server)
        queue.enqueue(client, "up", "m1:1", b"pdu", "normal")
        dead = SegmentQueue(client, "up", "dead")
        dead.create_group()
        entries = dead.read(10, 0)
        dead.mark_written(entries)
        dead.unmark_written(entries)
        assert [e.written for e in SegmentQueue(client, "up", "next").orphans()] == [False]


class TestOutcomes:
    @pytest.fixture
    def world(self, server: fakeredis.FakeServer) -> tuple[Store, SegmentQueue, Outcomes]:
        store = Store(fakeredis.FakeRedis(server=server, decode_responses=True))
        segments = SegmentQueue(raw(server), "up", "me")
        segments.create_group()
        intake = ReceiptIntake(store, Jobs(), parking=Parking())
        return store, segments, Outcomes("up", segments, intake, accept_mo=lambda *a, **k: None)

    def sent(self, store: Store, segments: SegmentQueue, message_id: str) -> queue.Entry:
        """A message whose one segment a worker queued and recorded as `sent`."""
        store.create(
            Message(
                id=message_id,
                to="+4915112345678",
                sender="smsq",
                content="hi",
                segments=1,
                status=MessageStatus.SUBMITTING,
            )
        )
        store.claim_segment(message_id, 1)
        queue.enqueue(segments.client, "up", f"{message_id}:1", b"pdu", "normal")
        store.accept_segment(message_id, 1, "up", f"{message_id}.1", sent=True)
        (entry,) = segments.read(1, 0)
        return entry

    def test_acceptance_names_the_segment_by_the_smscs_id(
        self, world: tuple[Store, SegmentQueue, Outcomes]
    ) -> None:
        """The SMSC's id indexes the segment; a receipt parked under it before is applied
        after the acceptance; the entry is done."""
        store, segments, outcomes = world
        entry = self.sent(store, segments, "a1")
        outcomes.intake.apply_all("up", [CarrierReceipt("99", SegmentStatus.DELIVERED)])
        outcomes.store(Batch(answers=[Answer(entry, SegmentStatus.ACCEPTED, smsc_id="99")]))
        (segment,) = store.segments("a1", 1)
        assert (segment.status, segment.carrier_id) == ("delivered", "99")
        assert store.load("a1").status == "delivered"  # type: ignore[union-attr]
        assert segments.depth() == 0

    def test_a_refusal_carries_the_smpp_status(
        self, world: tuple[Store, SegmentQueue, Outcomes]
    ) -> None:
        store, segments, outcomes = world
        entry = self.sent(store, segments, "r1")
        refused = Answer(entry, SegmentStatus.REJECTED, error_code="0x0000000B")
        outcomes.store(Batch(answers=[refused]))
        (segment,) = store.segments("r1", 1)
        assert (segment.status, segment.error_code) == ("rejected", "0x0000000B")
        assert store.load("r1").status == "rejected"  # type: ignore[union-attr]

    def test_a_message_from_a_handset_goes_to_the_mo_intake(
        self, world: tuple[Store, SegmentQueue, Outcomes]
    ) -> None:
        """Sender, recipient, text and UDH as the deliver_sm said, under the carrier's name."""
        outcomes = world[2]
        taken: list[tuple[object, ...]] = []
        outcomes.accept_mo = lambda *args, **options: taken.append((*args[1:], options["udh"]))
        mo = MobileOriginated("+4915112345678", "4930123", "STOP", b"\x05\x00\x03\x01\x02\x01")
        outcomes.store(Batch(messages=[mo]))
        assert taken == [("up", "+4915112345678", "4930123", "STOP", mo.udh)]

    def test_no_answer_is_unknown_even_before_the_worker_stored_the_segment(
        self, world: tuple[Store, SegmentQueue, Outcomes], server: fakeredis.FakeServer
    ) -> None:
        """An unknown outcome waits (parked under our id) for the worker's `sent`, then
        applies: the segment is never left `sent` for the reconciler's hour."""
        store, segments, outcomes = world
        store.create(
            Message(
                id="u1",
                to="+4915112345678",
                sender="smsq",
                content="hi",
                segments=1,
                status=MessageStatus.SUBMITTING,
            )
        )
        store.claim_segment("u1", 1)
        queue.enqueue(segments.client, "up", "u1:1", b"pdu", "normal")
        (entry,) = segments.read(1, 0)
        outcomes.store(Batch(answers=[Answer(entry, SegmentStatus.UNKNOWN, error_code="x")]))
        _, parked = store.accept_segment("u1", 1, "up", "u1.1", sent=True)
        for receipt in parked:
            outcomes.intake.apply_to("u1", 1, receipt)
        (segment,) = store.segments("u1", 1)
        assert segment.status == "unknown"
