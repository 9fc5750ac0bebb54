"""The message contract shared by producer and worker: task names, queues, states, receipt words.

The producer enqueues tasks by these names and never imports `worker.tasks`; a task carries ids
only, the message itself lives in the store (`worker.store`).
"""

from __future__ import annotations

from enum import StrEnum

CONTRACT_VERSION = 1

# Task names (dotted constants; the producer enqueues by name).
SEND_SMS = "sms.send"
# A chunk of message ids of one lane, sent one after another (batch ingest).
SEND_MANY = "sms.send_many"
# Put a client receipt in its endpoint's queue (opened, released, retried, replayed,
# reconciled); the receipt engine delivers it (worker.receipts).
POST_RECEIPT = "sms.dlr.post"
# Wake the receipt engine for one endpoint: it drains the endpoint's queue (worker.receipts).
DRAIN_RECEIPTS = "sms.dlr.drain"
# Inbound (MO) messages (worker.mo): store what came of a multipart MO whose wait is over, and
# put an MO's webhook in its endpoint's queue again (reconciled, replayed).
FLUSH_MO_PARTS = "sms.mo.parts"
ROUTE_MO = "sms.mo.route"
HANDLE_CARRIER_RECEIPT = "sms.carrier_dlr"  # one kept request (before batched intake)
# Apply the carrier receipt requests kept in the inbox, many at a time (worker.receipts.intake).
DRAIN_CARRIER_RECEIPTS = "sms.carrier_dlr.drain"


class Queue(StrEnum):
    """Celery queues; each has its own worker process so an OTP never waits behind a campaign."""

    OTP = "otp"
    NORMAL = "normal"
    BULK = "bulk"
    DLR = "dlr"
    CARRIER_DLR = "carrier-dlr"


class Priority(StrEnum):
    """The lane a message travels in; the lane is the queue of the same name."""

    OTP = "otp"
    NORMAL = "normal"
    BULK = "bulk"

    @property
    def queue(self) -> Queue:
        return Queue(self.value)


class DlrMethod(StrEnum):
    """How a message's client receipts travel (`dlr-method`): a JSON POST or a GET query."""

    GET = "GET"
    POST = "POST"

    @classmethod
    def _missing_(cls, value: object) -> DlrMethod | None:
        """Any case names a method (`get`, `Post`), as the API takes it."""
        return cls.__members__.get(value.upper()) if isinstance(value, str) else None


class MessageStatus(StrEnum):
    """Message states (how a message moves through them: README.md, docs/reliability.md)."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    SUBMITTING = "submitting"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


# States after which nothing more happens to a message.
FINAL_STATUSES = frozenset(
    {
        MessageStatus.REJECTED,
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.EXPIRED,
        MessageStatus.FAILED,
        MessageStatus.CANCELLED,
    }
)
# States a message can still be cancelled from (nothing of it was submitted yet).
CANCELLABLE_STATUSES = frozenset({MessageStatus.QUEUED, MessageStatus.SCHEDULED})
# States that end the submission step (what a level-1 receipt reports).
SUBMISSION_OUTCOMES = frozenset(
    {MessageStatus.ACCEPTED, MessageStatus.REJECTED, MessageStatus.FAILED, MessageStatus.EXPIRED}
)


class SegmentStatus(StrEnum):
    """States of one carrier-sized segment."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SENT = "sent"  # handed to a gateway (Kannel); the answer of the SMSC behind it pending
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the request left, no answer came back
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"


TERMINAL_SEGMENT_STATUSES = frozenset(
    {SegmentStatus.DELIVERED, SegmentStatus.UNDELIVERED, SegmentStatus.EXPIRED}
)
# Segments the carrier took (a receipt's `segments.accepted` counts them) ...
SEGMENTS_TAKEN = frozenset(
    {
        SegmentStatus.ACCEPTED,
        SegmentStatus.DELIVERED,
        SegmentStatus.UNDELIVERED,
        SegmentStatus.EXPIRED,
    }
)
# ... and segments that did not, or did not reach the handset (`segments.failed`).
SEGMENTS_FAILED = frozenset(
    {
        SegmentStatus.REJECTED,
        SegmentStatus.FAILED,
        SegmentStatus.UNKNOWN,
        SegmentStatus.UNDELIVERED,
        SegmentStatus.EXPIRED,
    }
)


class ReceiptState(StrEnum):
    """Where one client receipt (one message, one level) stands."""

    OPEN = "open"  # due (now, or at its next attempt); in its endpoint's queue
    SENDING = "sending"  # an attempt holds it until its lease ends
    WAITING = "waiting"  # a level 2 waiting for the level 1 of the same message
    SENT = "sent"  # the client answered 2xx
    GONE = "gone"  # the client answered 410: never again
    DEAD = "dead"  # out of attempts: dead-lettered, replayable


RECEIPT_DONE = frozenset({ReceiptState.SENT, ReceiptState.GONE, ReceiptState.DEAD})
# Receipt statuses that carry no error.
RECEIPT_OK_STATUSES = frozenset({MessageStatus.ACCEPTED, MessageStatus.DELIVERED})


# SMPP / Jasmin-style words carried as `message_status` in receipts.
MESSAGE_STATUS_WORDS: dict[MessageStatus, str] = {
    MessageStatus.ACCEPTED: "ESME_ROK",
    MessageStatus.REJECTED: "REJECTD",
    MessageStatus.FAILED: "UNDELIV",
    MessageStatus.DELIVERED: "DELIVRD",
    MessageStatus.UNDELIVERED: "UNDELIV",
    MessageStatus.EXPIRED: "EXPIRED",
    MessageStatus.CANCELLED: "DELETED",
}


class ReceiptLevel:
    """`dlr-level` values: 1 = SMSC (carrier accepted / rejected), 2 = handset, 3 = both."""

    SMSC = 1
    TERMINAL = 2
    BOTH = 3

    @staticmethod
    def wants_smsc(level: int) -> bool:
        return level in (1, 3)

    @staticmethod
    def wants_terminal(level: int) -> bool:
        return level in (2, 3)
