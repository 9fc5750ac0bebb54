"""A stored message's status, lane and receipt method are enums in Python, plain words in Redis;
a receipt level's bookkeeping reads as a typed record."""

from __future__ import annotations

from worker.contract import DlrMethod, MessageStatus, Priority, ReceiptState
from worker.records import Message
from worker.store.receipts import ReceiptRecord, receipt_field


def test_the_hash_holds_the_same_words_as_before() -> None:
    message = Message(
        id="m1", to="+14155552671", sender="smsq", content="hi", priority=Priority.OTP,
        dlr_method=DlrMethod.GET, status=MessageStatus.SCHEDULED,
    )  # fmt: skip
    fields = message.to_hash()
    assert fields["priority"] == "otp"
    assert fields["dlr_method"] == "GET"
    assert fields["status"] == "scheduled"
    assert all(type(value) is str for value in fields.values())


def test_a_hash_reads_back_as_enums() -> None:
    message = Message.from_hash(
        {"id": "m1", "to": "+1", "priority": "bulk", "dlr_method": "get", "status": "delivered"}
    )
    assert message.priority is Priority.BULK
    assert message.dlr_method is DlrMethod.GET  # any case, as the API takes it
    assert message.status is MessageStatus.DELIVERED


def test_defaults_for_fields_left_out() -> None:
    message = Message.from_hash({"id": "m1", "to": "+1"})
    assert message.priority is Priority.NORMAL
    assert message.dlr_method is DlrMethod.POST
    assert message.status is MessageStatus.QUEUED


def test_a_receipt_level_reads_as_a_record() -> None:
    fields = {
        receipt_field(2, "state"): "open",
        receipt_field(2, "attempts"): "3",
        receipt_field(2, "seq"): "2",
        receipt_field(2, "not_before"): "1700000000000",
        receipt_field(2, "why"): "HTTP 503",
        receipt_field(1, "state"): "sent",
    }
    assert fields == {
        "rcpt:2:state": "open", "rcpt:2:attempts": "3", "rcpt:2:seq": "2",
        "rcpt:2:not_before": "1700000000000", "rcpt:2:why": "HTTP 503", "rcpt:1:state": "sent",
    }  # fmt: skip
    level_two = ReceiptRecord.of(fields, 2)
    assert level_two == ReceiptRecord(
        ReceiptState.OPEN, attempts=3, seq=2, not_before=1_700_000_000_000, why="HTTP 503"
    )
    assert not level_two.done
    assert ReceiptRecord.of(fields, 1).done
    assert ReceiptRecord.of(fields, 3) == ReceiptRecord(None)
