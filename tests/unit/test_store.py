"""The message store's atomic steps, on fakeredis (with its Lua runtime)."""

from __future__ import annotations

import fakeredis
import orjson
import pytest

from tests.receipt_steps import claim, settle
from worker.clock import now_ms
from worker.contract import MessageStatus
from worker.store import Message, Store, lua_scripts, new_message_id
from worker.store.keys import segments_key


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(decode_responses=True))


def stored(store: Store, segments: int = 2, **fields: object) -> Message:
    message = Message(
        id=new_message_id(), to="+14155552671", sender="smsq", content="x", segments=segments,
        created_at=1_795_000_000_000,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip
    store.create(message)
    return message


class TestMessages:
    def test_round_trips_through_the_hash(self, store: Store) -> None:
        """A stored message loads back equal."""
        message = stored(store, dlr=True, dlr_level=3, dlr_url="https://example.com/r")
        assert store.load(message.id) == message

    def test_message_ids_are_unique_and_time_ordered(self) -> None:
        """Ids are 32 hex characters whose prefix orders them by creation time."""
        ids = [new_message_id() for _ in range(1000)]
        assert len(set(ids)) == 1000
        assert all(len(i) == 32 for i in ids)
        assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)

    def test_transition_moves_only_from_allowed_states(self, store: Store) -> None:
        """A transition from a state not in the allowed set changes nothing."""
        message = stored(store)
        assert not store.transition(message.id, {MessageStatus.SCHEDULED}, MessageStatus.SUBMITTING)
        assert store.transition(message.id, {MessageStatus.QUEUED}, MessageStatus.SUBMITTING)
        assert store.fields(message.id)["status"] == "submitting"
        assert [e["event"] for e in store.events(message.id)] == ["accepted", "submitting"]


class TestConcatReference:
    def test_reference_is_fixed_per_message_and_fresh_per_recipient(self, store: Store) -> None:
        """A message keeps its reference; the next message to the same number gets the next one."""
        first, second = stored(store), stored(store)
        ref = store.next_concat_reference(first.id, first.to, 8)
        assert store.next_concat_reference(first.id, first.to, 8) == ref
        assert store.next_concat_reference(second.id, second.to, 8) == (ref + 1) % 256

    def test_reference_wraps_at_the_reference_space(self, store: Store) -> None:
        """References cycle through all 256 values before repeating."""
        refs = [store.next_concat_reference(stored(store).id, "+1", 8) for _ in range(257)]
        assert len(set(refs[:256])) == 256
        assert refs[256] == refs[0]


class TestSegments:
    def test_a_segment_is_claimed_once(self, store: Store) -> None:
        """Only the first claim of a segment succeeds."""
        message = stored(store)
        assert store.claim_segment(message.id, 1)
        assert not store.claim_segment(message.id, 1)
        assert store.claim_segment(message.id, 2)

    def test_a_claim_asked_again_with_its_token_is_still_its_own(self, store: Store) -> None:
        """The claim script answers a repeat of the same claim (its token: a caller whose reply
        was lost asks again) with 1 and changes nothing; another claim gets 0."""
        message = stored(store)
        take = lua_scripts.load(store.redis).claim_segment
        keys = [segments_key(message.id)]
        assert take(keys=keys, args=[1, 1, "0", "token-a"]) == 1
        assert take(keys=keys, args=[1, 2, "0", "token-a"]) == 1
        assert take(keys=keys, args=[1, 3, "0", "token-b"]) == 0
        assert take(keys=keys, args=[1, 4, "0", ""]) == 0
        (first, _) = store.segments(message.id, 2)
        assert (first.status, first.attempts, first.submitted_at) == ("submitting", 1, 1)

    def test_released_segment_can_be_claimed_again(self, store: Store) -> None:
        """A segment given back after a failure that sent nothing is claimable again."""
        message = stored(store)
        store.claim_segment(message.id, 1)
        store.release_segment(message.id, 1, "unavailable", "503")
        assert store.claim_segment(message.id, 1)
        assert store.segments(message.id, 2)[0].attempts == 2

    @pytest.mark.parametrize(
        ("statuses", "outcome"),
        [
            (["accepted", "accepted"], "accepted"),
            (["accepted", "rejected"], "rejected"),
            (["failed", "accepted"], "failed"),
            (["rejected", "failed"], "rejected"),
            (["accepted", "submitting"], None),
            (["accepted", "sent"], None),
            (["rejected", "sent"], None),
        ],
    )
    def test_submission_outcome(
        self, store: Store, statuses: list[str], outcome: str | None
    ) -> None:
        """The outcome is rejected over failed over accepted, and none while a segment is open."""
        message = stored(store)
        for seq, status in enumerate(statuses, start=1):
            store.redis.hset(f"smsq:msg:{message.id}:seg", f"{seq}:status", status)
        assert store.finish_submission(message.id, 2) == outcome


class TestReceiptsIn:
    def accepted(self, store: Store, segments: int = 2) -> Message:
        message = stored(store, segments=segments)
        for seq in range(1, segments + 1):
            store.claim_segment(message.id, seq)
            store.record_accepted(message.id, seq, "sim", f"c{seq}-{message.id}")
        store.finish_submission(message.id, segments)
        return message

    def test_message_is_delivered_when_every_segment_is(self, store: Store) -> None:
        """The message becomes delivered, once, when the last segment is delivered."""
        message = self.accepted(store)
        first = store.apply_receipt(message.id, 1, "delivered", None, None)
        assert (first.segment_changed, first.message_status, first.became_final) == (
            True,
            "accepted",
            False,
        )
        second = store.apply_receipt(message.id, 2, "delivered", None, None)
        assert (second.message_status, second.became_final) == ("delivered", True)

    def test_duplicate_receipt_changes_nothing(self, store: Store) -> None:
        """A receipt repeated after the message became final is a no-op."""
        message = self.accepted(store, segments=1)
        assert store.apply_receipt(message.id, 1, "delivered", None, None).became_final
        again = store.apply_receipt(message.id, 1, "delivered", None, None)
        assert (again.segment_changed, again.became_final) == (False, False)

    def test_state_never_goes_backwards(self, store: Store) -> None:
        """An intermediate 'accepted' arriving after 'undelivered' is ignored."""
        message = self.accepted(store, segments=1)
        store.apply_receipt(message.id, 1, "undelivered", "001", "absent subscriber")
        late = store.apply_receipt(message.id, 1, "accepted", None, None)
        assert not late.segment_changed
        assert store.segments(message.id, 1)[0].status == "undelivered"
        assert store.fields(message.id)["status"] == "undelivered"

    def test_any_undelivered_segment_makes_the_message_undelivered(self, store: Store) -> None:
        """One undelivered segment out of two: the message ends undelivered."""
        message = self.accepted(store)
        store.apply_receipt(message.id, 2, "undelivered", "001", "x")
        result = store.apply_receipt(message.id, 1, "delivered", None, None)
        assert (result.message_status, result.became_final) == ("undelivered", True)

    def test_a_rejected_segment_makes_the_message_rejected(self, store: Store) -> None:
        """An SMSC's REJECTD after acceptance ends the message `rejected`, not `undelivered`,
        even next to an undelivered segment, and opens the level-2 receipt."""
        message = self.accepted(store)
        store.set_fields(message.id, {"dlr": "1", "dlr_level": "2"})
        store.apply_receipt(message.id, 1, "undelivered", "001", "x")
        result = store.apply_receipt(message.id, 2, "rejected", "011", "stat:REJECTD")
        assert (result.message_status, result.became_final) == ("rejected", True)
        assert result.receipt_levels == (2,)

    def test_carrier_index_finds_the_segment(self, store: Store) -> None:
        """A carrier id maps back to its message and segment."""
        message = self.accepted(store)
        assert store.segment_for_carrier_id("sim", f"c2-{message.id}") == (message.id, 2)
        assert store.segment_for_carrier_id("sim", "nope") is None


class TestReceiptsOut:
    def test_level_two_waits_for_level_one(self, store: Store) -> None:
        """With level 3, a level-2 receipt is parked until level 1 is done, then released."""
        message = stored(store, dlr=True, dlr_level=3)
        assert store.open_receipt(message.id, 2)
        assert claim(store, message.id, 2) == -1
        assert store.open_receipt(message.id, 1)
        assert claim(store, message.id, 1) == 1
        assert settle(store, message.id, 1, "sent") == 2  # released level 2
        assert claim(store, message.id, 2) == 2

    def test_receipt_is_opened_once_and_claimed_once(self, store: Store) -> None:
        """A second open or a concurrent claim of the same receipt gets nothing; a retry keeps
        the seq; a done receipt is never claimed again."""
        message = stored(store, dlr=True, dlr_level=1)
        assert store.open_receipt(message.id, 1)
        assert not store.open_receipt(message.id, 1)
        assert claim(store, message.id, 1) == 1
        assert claim(store, message.id, 1) == 0
        assert settle(store, message.id, 1, "retry", due=now_ms()) == 1
        assert claim(store, message.id, 1) == 1  # same seq on a retry
        assert settle(store, message.id, 1, "sent") == 1
        assert claim(store, message.id, 1) == 0


class TestAwaitingTheSmsc:
    """Segments a gateway queued (`sent`): the SMSC's answer, as a receipt, ends the submission."""

    def sent(self, store: Store, segments: int = 1, level: int = 3) -> Message:
        message = stored(store, segments=segments, dlr=True, dlr_level=level, dlr_url="https://c/r")
        store.transition(message.id, {"queued"}, "submitting")
        for seq in range(1, segments + 1):
            store.claim_segment(message.id, seq)
            _, _, finished = store.accept_and_finish(
                message.id, seq, "kannel", f"{message.id}.{seq}", segments, sent=True
            )
            assert finished is not None
            assert finished.outcome is None
        return message

    def test_sent_is_not_finished(self, store: Store) -> None:
        """Queued at the gateway: the segment is `sent`, indexed, and nothing is reported."""
        message = self.sent(store)
        assert store.segments(message.id, 1)[0].status == "sent"
        assert store.segment_for_carrier_id("kannel", f"{message.id}.1") == (message.id, 1)
        fields = store.fields(message.id)
        assert (fields["status"], "submit_outcome" in fields) == ("submitting", False)
        assert "rcpt:1:state" not in fields

    def test_the_smsc_accepting_finishes_the_submission(self, store: Store) -> None:
        """An acceptance receipt records `accepted` and opens the level-1 receipt, once."""
        message = self.sent(store)
        result = store.apply_receipt(message.id, 1, "accepted", None, None)
        assert (result.segment_changed, result.message_status) == (True, "accepted")
        assert result.receipt_levels == (1,)
        assert store.fields(message.id)["submit_outcome"] == "accepted"
        again = store.apply_receipt(message.id, 1, "accepted", None, None)
        assert (again.segment_changed, again.receipt_levels) == (False, ())

    @pytest.mark.parametrize(("level", "opened"), [(1, (1,)), (3, (1,)), (2, (2,))])
    def test_the_smsc_refusing_rejects_the_message(
        self, store: Store, level: int, opened: tuple[int, ...]
    ) -> None:
        """A refusal makes the submission (and the message) `rejected`, final: reported at
        level 1, or at level 2 when only level 2 was asked for."""
        message = self.sent(store, level=level)
        result = store.apply_receipt(message.id, 1, "rejected", "0x00000045", "NACK/0x00000045/")
        assert (result.message_status, result.became_final, result.receipt_levels) == (
            "rejected", True, opened,
        )  # fmt: skip
        assert store.fields(message.id)["submit_outcome"] == "rejected"

    def test_a_terminal_receipt_implies_the_smsc_took_it(self, store: Store) -> None:
        """Delivered before the acceptance arrived: accepted (level 1), then delivered
        (level 2), both opened by the one receipt; the late acceptance changes nothing."""
        message = self.sent(store)
        result = store.apply_receipt(message.id, 1, "delivered", None, None)
        assert (result.message_status, result.became_final) == ("delivered", True)
        assert result.receipt_levels == (1, 2)
        assert store.fields(message.id)["submit_outcome"] == "accepted"
        late = store.apply_receipt(message.id, 1, "accepted", None, None)
        assert not late.segment_changed

    def test_every_segment_must_be_answered(self, store: Store) -> None:
        """Two segments: the submission finishes with the second answer only."""
        message = self.sent(store, segments=2)
        first = store.apply_receipt(message.id, 2, "accepted", None, None)
        assert (first.message_status, first.receipt_levels) == ("submitting", ())
        second = store.apply_receipt(message.id, 1, "accepted", None, None)
        assert (second.message_status, second.receipt_levels) == ("accepted", (1,))

    def test_only_a_sent_segment_becomes_unknown(self, store: Store) -> None:
        """No answer in time: `unknown` fails the submission; an answered segment keeps its
        state."""
        message = self.sent(store, segments=2)
        store.apply_receipt(message.id, 1, "accepted", None, None)
        kept = store.apply_receipt(message.id, 1, "unknown", "no_smsc_answer", "none")
        assert not kept.segment_changed
        result = store.apply_receipt(message.id, 2, "unknown", "no_smsc_answer", "none")
        assert (result.message_status, result.became_final, result.receipt_levels) == (
            "failed", True, (1,),
        )  # fmt: skip
        assert [s.status for s in store.segments(message.id, 2)] == ["accepted", "unknown"]


class TestCancel:
    @pytest.mark.parametrize(("dlr_level", "opened"), [(1, 1), (3, 1), (2, 2), (0, 0)])
    def test_a_queued_message_is_cancelled_with_its_receipt(
        self, store: Store, dlr_level: int, opened: int
    ) -> None:
        """Cancelling ends it `cancelled` (its submission too) and opens its receipt as any
        final outcome before submission does, saying `cancelled`."""
        message = Message(
            id=new_message_id(), to="+14155552671", sender="s", content="hi", segments=1,
            dlr=dlr_level > 0, dlr_level=dlr_level or 1, dlr_url="https://c.test/r",
        )  # fmt: skip
        store.create(message)
        assert store.cancel_many([message.id]) == [opened]
        fields = store.fields(message.id)
        assert (fields["status"], fields["submit_outcome"]) == ("cancelled", "cancelled")
        if opened:
            assert orjson.loads(fields[f"rcpt:{opened}:snap"])["status"] == "cancelled"
        assert store.cancel_many([message.id]) == [-1]  # final: never twice

    def test_a_message_being_submitted_is_not_cancelled(self, store: Store) -> None:
        message = Message(id=new_message_id(), to="+14155552671", sender="s", content="hi",
                          segments=1)  # fmt: skip
        store.create(message)
        store.transition(message.id, {"queued"}, "submitting")
        assert store.cancel_many([message.id, "0" * 32]) == [-1, -1]
        assert store.fields(message.id)["status"] == "submitting"
