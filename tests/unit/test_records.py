"""A stored message's status, lane and receipt method are enums in Python, plain words in Redis."""

from __future__ import annotations

from worker.contract import DlrMethod, MessageStatus, Priority
from worker.records import Message


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
