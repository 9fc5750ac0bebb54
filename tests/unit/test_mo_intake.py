"""Taking inbound messages in: reassembly (any order, 8- and 16-bit references, giving up after
the wait), repeats, owners, keywords on opt-out lists, the webhook's place in its endpoint's
queue (fakeredis with its Lua, the real store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import fakeredis
import pytest

from worker.clock import now_ms
from worker.contract import DRAIN_RECEIPTS, FLUSH_MO_PARTS
from worker.encoding import ReferenceBits, encode_message
from worker.keys import KeyStore
from worker.mo import accept as accept_with_client
from worker.mo.intake import MoIntake, concatenation
from worker.mo.keywords import Keywords
from worker.mo.owners import ANY_NUMBER, Owners
from worker.optouts import DEPLOYMENT, OptOuts
from worker.queueing import SCHEDULE_KEY
from worker.receipts.config import EngineConfig
from worker.receipts.endpoints import endpoint_for
from worker.receipts.routing import ReceiptRouter
from worker.scheduler import decode_entry
from worker.store.keys import COUNTERS_KEY, MO_WATCH_KEY, endpoint_queue_key
from worker.store.mo import MoRecord
from worker.store.receipts import ReceiptStore

HANDSET = "+4915112340001"
OURS = "+4930123456"
HOOK = "https://client.test/mo"


class Recorder:
    """A publisher that keeps what it is asked to publish."""

    def __init__(self) -> None:
        self.now: list[tuple[str, list[Any]]] = []

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.now.append((task, list(args)))

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        self.now.append((task, list(args)))


class Inbox:
    def __init__(self) -> None:
        self.redis = fakeredis.FakeRedis(decode_responses=True)
        self.publisher = Recorder()
        router = ReceiptRouter(ReceiptStore(self.redis), self.publisher, EngineConfig())
        self.intake = MoIntake(self.redis, router, keywords=Keywords.of(["en"]),
                               reassembly_ms=60_000)  # fmt: skip
        self.keys = KeyStore(self.redis)
        self.owners = Owners(self.redis)
        self.optouts = OptOuts(self.redis)

    def accept(self, text: str, *, udh: bytes = b"", carrier_id: str = "", sender: str = HANDSET,
               to: str = OURS) -> str | None:  # fmt: skip
        return self.intake.accept("sim", sender, to, text, udh=udh, received_at=now_ms(),
                                  carrier_id=carrier_id)  # fmt: skip

    def parts(self, text: str, bits: ReferenceBits = 8) -> list[tuple[bytes, str]]:
        encoded = encode_message(text, reference=0xA7 if bits == 8 else 0xBEEF, reference_bits=bits)
        return [(s.udh, s.text) for s in encoded.segments]

    def load(self, mo_id: str | None) -> MoRecord:
        record = self.intake.store.load(str(mo_id))
        assert record is not None
        return record

    def counters(self) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(COUNTERS_KEY))

    def scheduled(self) -> list[tuple[str, list[Any]]]:
        entries = cast(list[str], self.redis.zrange(SCHEDULE_KEY, 0, -1))
        return [decode_entry(entry)[:2] for entry in entries]


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


LONG = "This reply is long enough to need three parts once an SMSC cuts it for the air. " * 4


class TestReassembly:
    @pytest.mark.parametrize("bits", [8, 16])
    @pytest.mark.parametrize("order", ["in", "reverse", "middle first"])
    def test_parts_in_any_order_make_one_mo(
        self, inbox: Inbox, bits: ReferenceBits, order: str
    ) -> None:
        """The last part to come completes the MO, whatever the order; the others wait."""
        parts = inbox.parts(LONG, bits)
        assert len(parts) >= 3
        if order == "reverse":
            parts = parts[::-1]
        elif order == "middle first":
            parts = [parts[1], parts[0], *parts[2:]]
        answers = [inbox.accept(text, udh=udh) for udh, text in parts]
        assert answers[:-1] == [None] * (len(parts) - 1)
        record = inbox.load(str(answers[-1]))
        assert (record.text, record.parts, record.missing) == (LONG, len(parts), "")

    def test_a_ucs2_reply_is_reassembled(self, inbox: Inbox) -> None:
        text = "Спасибо, получил! 👍 " * 8
        mo_id = None
        for udh, part in inbox.parts(text)[::-1]:
            mo_id = inbox.accept(part, udh=udh)
        record = inbox.load(str(mo_id))
        assert record.text == text

    def test_the_wait_ends_with_what_came(self, inbox: Inbox) -> None:
        """The first part schedules the flush; when it runs, the parts that came are stored,
        the missing one named."""
        parts = inbox.parts(LONG)
        inbox.accept(parts[0][1], udh=parts[0][0])
        inbox.accept(parts[2][1], udh=parts[2][0])
        ((task, args),) = inbox.scheduled()
        assert task == FLUSH_MO_PARTS
        mo_id = inbox.intake.flush(*args)
        record = inbox.load(str(mo_id))
        assert record.text == parts[0][1] + parts[2][1]
        assert (record.parts, record.missing) == (len(parts), "2")
        assert inbox.intake.flush(*args) is None  # nothing left to store

    def test_a_flush_after_the_whole_mo_stores_nothing(self, inbox: Inbox) -> None:
        for udh, text in inbox.parts(LONG):
            inbox.accept(text, udh=udh)
        ((_task, args),) = inbox.scheduled()
        assert inbox.intake.flush(*args) is None
        assert inbox.counters().get("mo_unowned") == "1"

    def test_two_replies_with_different_references_stay_apart(self, inbox: Inbox) -> None:
        first = encode_message(LONG, reference=1).segments
        second = encode_message(LONG.upper(), reference=2).segments
        for a, b in zip(first, second, strict=True):
            inbox.accept(a.text, udh=a.udh)
            inbox.accept(b.text, udh=b.udh)
        texts = {r.text for r in inbox.intake.store.page("-")[0]}
        assert texts == {LONG, LONG.upper()}

    @pytest.mark.parametrize("udh", ["050003a70304", "050003a70100", "0500", "0a0003a70201"])
    def test_an_impossible_header_is_a_whole_message(self, udh: str) -> None:
        """Part 4 of 3, a total of 1, a truncated or lying UDHL: stored as it came."""
        assert concatenation(bytes.fromhex(udh)) is None


class TestRepeats:
    def test_a_carrier_id_seen_before_is_the_same_mo(self, inbox: Inbox) -> None:
        first = inbox.accept("hello", carrier_id="SM1")
        assert inbox.accept("hello", carrier_id="SM1") == first
        assert len(inbox.intake.store.page("-")[0]) == 1

    def test_without_an_id_each_request_is_an_mo(self, inbox: Inbox) -> None:
        assert inbox.accept("hello") != inbox.accept("hello")

    def test_a_repeated_part_is_kept_once(self, inbox: Inbox) -> None:
        parts = inbox.parts(LONG)
        inbox.accept(parts[0][1], udh=parts[0][0], carrier_id="p1")
        assert inbox.accept(parts[0][1], udh=parts[0][0], carrier_id="p1") is None
        mo_id = None
        for index, (udh, text) in enumerate(parts[1:], start=2):
            mo_id = inbox.accept(text, udh=udh, carrier_id=f"p{index}")
        record = inbox.load(str(mo_id))
        assert record.text == LONG

    def test_an_mo_that_could_not_be_stored_is_taken_again(self, inbox: Inbox) -> None:
        """A failure after the carrier's id was remembered: the carrier's retry stores it."""
        broken = inbox.intake.owners.resolve

        def fail(recipient: str) -> None:
            raise ConnectionError("redis went away")

        inbox.intake.owners.resolve = fail  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            inbox.accept("hello", carrier_id="SM9")
        inbox.intake.owners.resolve = broken  # type: ignore[method-assign]
        assert inbox.accept("hello", carrier_id="SM9") is not None


class TestOwners:
    def test_no_owner_stored_and_counted_not_delivered(self, inbox: Inbox) -> None:
        mo_id = str(inbox.accept("hello"))
        record = inbox.load(mo_id)
        assert (record.key_id, record.state) == ("", "")
        assert inbox.counters()["mo_unowned"] == "1"
        assert inbox.redis.zcard(MO_WATCH_KEY) == 0
        assert not inbox.publisher.now

    def test_the_numbers_owner_gets_the_webhook_at_the_numbers_url(self, inbox: Inbox) -> None:
        key = inbox.keys.create("tenant", mo_url="https://key.test/mo").key
        inbox.owners.assign(key.id, OURS, HOOK)
        mo_id = str(inbox.accept("hello"))
        record = inbox.load(mo_id)
        assert (record.key_id, record.mo_url, record.state) == (key.id, HOOK, "open")
        queue = endpoint_queue_key(endpoint_for(key.id, HOOK).id)
        assert inbox.redis.zrange(queue, 0, -1) == [f"m:{mo_id}"]
        assert [task for task, _ in inbox.publisher.now] == [DRAIN_RECEIPTS]
        assert inbox.counters()["mo_queued"] == "1"

    def test_the_keys_own_url_serves_its_numbers_without_one(self, inbox: Inbox) -> None:
        key = inbox.keys.create("tenant", mo_url="https://key.test/mo").key
        inbox.owners.assign(key.id, OURS)
        record = inbox.load(str(inbox.accept("hello")))
        assert record.mo_url == "https://key.test/mo"

    def test_an_owner_without_url_keeps_its_mos_listed(self, inbox: Inbox) -> None:
        key = inbox.keys.create("tenant").key
        inbox.owners.assign(key.id, OURS)
        mo_id = inbox.accept("hello")
        assert [r.id for r in inbox.intake.store.page(key.id)[0]] == [mo_id]
        assert inbox.counters()["mo_stored"] == "1"

    def test_a_key_owning_any_number_takes_the_rest(self, inbox: Inbox) -> None:
        mine = inbox.keys.create("mine").key
        other = inbox.keys.create("other").key
        inbox.owners.assign(mine.id, ANY_NUMBER, HOOK)
        inbox.owners.assign(other.id, "+4930999999", HOOK)
        assert inbox.owners.resolve(OURS) is not None
        assert inbox.owners.resolve(OURS).key_id == mine.id  # type: ignore[union-attr]
        assert inbox.owners.resolve("+4930999999").key_id == other.id  # type: ignore[union-attr]

    def test_a_revoked_key_owns_nothing(self, inbox: Inbox) -> None:
        key = inbox.keys.create("tenant").key
        inbox.owners.assign(key.id, OURS, HOOK)
        inbox.keys.revoke(key.id)
        assert inbox.owners.resolve(OURS) is None

    def test_a_number_changes_hands(self, inbox: Inbox) -> None:
        first = inbox.keys.create("first").key
        second = inbox.keys.create("second").key
        inbox.owners.assign(first.id, OURS)
        assert inbox.owners.assign(second.id, OURS, HOOK) == first.id
        assert inbox.owners.numbers(first.id) == []
        assert inbox.owners.numbers(second.id) == [(OURS, HOOK)]


class TestKeywords:
    def test_stop_to_an_owned_number_fills_the_owners_list(self, inbox: Inbox) -> None:
        key = inbox.keys.create("tenant").key
        inbox.owners.assign(key.id, OURS)
        inbox.accept(" Stop ", sender="4915112340001")
        assert [n for n, _ in inbox.optouts.numbers(key.id)] == [HANDSET]
        assert inbox.optouts.numbers(DEPLOYMENT) == []
        assert inbox.optouts.refused(key.id, [HANDSET]) == [True]
        other = inbox.keys.create("other").key
        assert inbox.optouts.refused(other.id, [HANDSET]) == [False]

    def test_stop_to_a_number_nobody_owns_fills_the_deployments(self, inbox: Inbox) -> None:
        inbox.accept("UNSUBSCRIBE")
        anyone = inbox.keys.create("anyone").key
        assert inbox.optouts.refused(anyone.id, [HANDSET]) == [True]

    def test_start_lifts_it(self, inbox: Inbox) -> None:
        key = inbox.keys.create("tenant").key
        inbox.owners.assign(key.id, OURS)
        inbox.accept("STOP")
        record = inbox.load(str(inbox.accept("start")))
        assert record.keyword == "optin"
        assert inbox.optouts.refused(key.id, [HANDSET]) == [False]

    def test_a_sentence_with_stop_in_it_is_just_a_message(self, inbox: Inbox) -> None:
        inbox.accept("please stop sending me these")
        assert inbox.optouts.numbers(DEPLOYMENT) == []


class TestWithAClientOnly:
    def test_accept_rings_through_the_durable_schedule(self) -> None:
        """`worker.mo.accept` needs only a Redis client: the drain is started through the
        schedule, which the scheduler publishes within a tenth of a second."""
        client = fakeredis.FakeRedis(decode_responses=True)
        key = KeyStore(client).create("tenant").key
        Owners(client).assign(key.id, OURS, HOOK)
        mo_id = accept_with_client(client, "smpp", HANDSET, OURS, "hi", received_at=now_ms())
        assert mo_id is not None
        entries = cast(list[str], client.zrange(SCHEDULE_KEY, 0, -1))
        assert [decode_entry(e)[0] for e in entries] == [DRAIN_RECEIPTS]
        queue = endpoint_queue_key(endpoint_for(key.id, HOOK).id)
        assert client.zrange(queue, 0, -1) == [f"m:{mo_id}"]
