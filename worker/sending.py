"""Sending one message: encode, claim each segment, submit it, record the outcome.

A segment is claimed atomically in the store before it is submitted and its carrier id stored
after, so a redelivered or retried task skips what was already submitted; the carrier gets
`message_id:seq` as its client reference. What happens next (a receipt, a retry later) is
handed to the `Publisher`; nothing here knows Celery.

A carrier that only queued the segment at a gateway (Kannel's 202, `Accepted.awaiting_ack`)
leaves it `sent`: the submission finishes when the SMSC's answer comes back as a receipt
(`Store.apply_receipt`), not here.

When a request left and no answer came back (a read timeout), the segment's outcome is
`unknown` and counted. It is sent again, with the same client reference, only when the carrier
honours client references (`Carrier.honours_client_ref`: a repeat gets the first answer and no
second SMS); otherwise it stays `unknown`, never blindly resent, and the submission fails with
`unknown_outcome` so the client can decide (docs/reliability.md).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from worker.carriers.base import Accepted, Carrier, SegmentSubmission
from worker.clock import now_ms
from worker.contract import (
    POST_RECEIPT,
    SEND_SMS,
    MessageStatus,
    Priority,
    Queue,
    ReceiptLevel,
    SegmentStatus,
)
from worker.encoding import EncodedMessage, Segment, encode_message
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
    ValidationError,
)
from worker.inbound import ReceiptIntake
from worker.otp.content import message_text
from worker.queueing import Publisher
from worker.receipts.tokens import segment_receipt_url
from worker.store import Begun, Finished, Message, Store
from worker.store.receipts import Routing

if TYPE_CHECKING:
    from worker.receipts.routing import ReceiptRouter

log = logging.getLogger(__name__)

# Carrier retry backoff: full jitter over an exponentially growing cap, durable (scheduler).
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 300.0
MAX_SEND_ATTEMPTS = 12
REFERENCE_BITS: Literal[8, 16] = 8
# Waits our own pacing imposed (`worker.carriers.routing`: the shared rate limit, the circuit
# breaker, the concurrency limit): retried, but they are no carrier failure, so they do not
# count as send attempts.
PACING_CODES = frozenset({"rate_limited", "circuit_open", "concurrency_limited"})


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one run of the send task ended with."""

    status: str  # the message status afterwards
    submitted: int = 0  # segments submitted by this run
    retry_in: float | None = None  # seconds until the durable retry, when one was scheduled


def retry_delay(attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff, never shorter than the carrier's `Retry-After`."""
    cap = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(0, cap)
    return max(delay, retry_after or 0.0)


def lane_of(message: Message) -> str:
    """The queue a message's send task travels on."""
    return lane_for(message.priority)


def lane_for(priority: str) -> str:
    """The queue of a priority (`normal` for one we do not know)."""
    try:
        return Priority(priority).queue.value
    except ValueError:
        return Queue.NORMAL.value


class Sender:
    """Sends messages through one carrier; one per worker process."""

    def __init__(
        self,
        store: Store,
        carrier: Carrier,
        publisher: Publisher,
        public_url: str,
        receipts: ReceiptRouter | None = None,
    ):
        self.store = store
        self.carrier = carrier
        self.publisher = publisher
        self.receipt_url = f"{public_url}/carriers/{carrier.name}/dlr"
        # Opened receipts go straight into their endpoint's queue (no `sms.dlr.post` task).
        self.receipts = receipts

    def send(self, message_id: str) -> SendOutcome:
        """Run the submission of `message_id` as far as it can go now."""
        # One round trip: load, queued/scheduled → submitting, the concatenation reference.
        return self._send(message_id, self.store.begin_send(message_id, REFERENCE_BITS))

    def _send(self, message_id: str, begun: Begun | None) -> SendOutcome:
        if begun is None:
            log.warning("send: unknown message", extra={"message_id": message_id})
            return SendOutcome(status="unknown")
        message = begun.message
        if begun.state == "final":
            # A terminal receipt can overtake the end of a submission whose run then died:
            # finishing (once, atomically) still records the outcome and opens its receipt.
            self._finish(message, self._total(message), 0)
            return SendOutcome(status=message.status)
        if begun.state == "expired":
            return self._expire(message)
        try:
            encoded = self._encode(message, begun.concat_ref or 0)
        except ValidationError as exc:
            return self._fail_unencodable(message, exc)
        return self._submit_segments(message, encoded)

    def send_many(self, message_ids: Sequence[str]) -> list[SendOutcome]:
        """`send` each message of a chunk (`sms.send_many`), one after another, on its own.

        Each id is claimed segment by segment exactly as alone, so a redelivered chunk skips
        what was submitted. An id that raises does not stop the others: it is logged and
        left to the reconciler (it is still on the submit watch list), as a failed `sms.send`.
        """
        # The chunk's starts in one round trip; a message is `submitting` from then on.
        started = self.store.begin_sends(message_ids, REFERENCE_BITS)
        outcomes = []
        for message_id, begun in zip(message_ids, started, strict=True):
            try:
                outcomes.append(self._send(message_id, begun))
            except Exception:
                log.exception("send failed", extra={"message_id": message_id})
                outcomes.append(SendOutcome(status="error"))
        return outcomes

    def _expire(self, message: Message) -> SendOutcome:
        """Drop a message whose validity ran out before any segment was submitted."""
        segments = self.store.segments(message.id, message.segments)
        if any(s.status != SegmentStatus.PENDING for s in segments):
            return self._expire_rest(message)
        moved = self.store.transition(
            message.id,
            {MessageStatus.QUEUED, MessageStatus.SCHEDULED, MessageStatus.SUBMITTING},
            MessageStatus.EXPIRED,
            reason="validity",
        )
        if moved:
            self.store.set_fields(message.id, {"submit_outcome": MessageStatus.EXPIRED})
            self._queue_receipts(message, MessageStatus.EXPIRED, final=True)
        return SendOutcome(status=MessageStatus.EXPIRED)

    def _expire_rest(self, message: Message) -> SendOutcome:
        """Partly sent when validity ran out: the rest is not sent; the carrier finishes the
        part it has, and the submission fails (a partial message is not what was asked)."""
        for state in self.store.segments(message.id, message.segments):
            if state.status == SegmentStatus.PENDING and self.store.claim_segment(
                message.id, state.seq
            ):
                self.store.record_segment_failure(
                    message.id, state.seq, SegmentStatus.FAILED, "expired", "validity ran out"
                )
        return self._finish(message, self._total(message), 0)

    def _total(self, message: Message) -> int:
        """How many segments the submission has (one when the carrier segments the text)."""
        return 1 if self.carrier.submits_whole_text else message.segments

    def _encode(self, message: Message, reference: int) -> EncodedMessage:
        encoded = encode_message(
            message_text(message),  # OTP: an OTP code is stored sealed; unsealed only here
            message.coding,
            reference=reference,
            reference_bits=REFERENCE_BITS,
            max_segments=message.max_segments,
        )
        # A carrier that segments the text itself gets one submission: the message then has one
        # segment in our state machine (and `parts` records what the handset receives).
        tracked = self._total(message) if self.carrier.submits_whole_text else len(encoded.segments)
        if tracked != message.segments:
            self.store.set_fields(
                message.id, {"segments": str(tracked), "parts": str(len(encoded.segments))}
            )
        return encoded

    def _fail_unencodable(self, message: Message, exc: ValidationError) -> SendOutcome:
        self.store.set_fields(message.id, {"error_code": exc.code, "error_message": exc.message})
        if self.store.transition(
            message.id, {MessageStatus.SUBMITTING}, MessageStatus.FAILED, reason=exc.code
        ):
            self.store.set_fields(message.id, {"submit_outcome": MessageStatus.FAILED})
            self._queue_receipts(message, MessageStatus.FAILED, final=True)
        return SendOutcome(status=MessageStatus.FAILED)

    def _submit_segments(self, message: Message, encoded: EncodedMessage) -> SendOutcome:
        segments = encoded.segments
        if self.carrier.submits_whole_text:
            segments = segments[:1]  # the carrier segments the text itself
        total = len(segments)
        resend = self.carrier.honours_client_ref
        submitted = 0
        unresolved: CarrierError | None = None
        finished: Finished | None = None
        for segment in segments:
            if not self.store.claim_segment(message.id, segment.seq, resend_unknown=resend):
                continue
            try:
                accepted = self.carrier.submit(self._submission(message, encoded, segment, total))
            except CarrierUnavailableError as exc:
                self.store.release_segment(
                    message.id, segment.seq, exc.code or "unavailable", str(exc)
                )
                return self._retry_later(message, exc)
            except CarrierRejectedError as exc:
                self._reject_rest(message, segment.seq, total, exc)
                break
            except CarrierUnknownOutcomeError as exc:
                self._unknown(message, segment.seq, exc)
                unresolved = exc if resend else unresolved
                continue
            if segment.seq == total and unresolved is None:  # the end: finish in the same step
                finished = self._accepted_last(message, segment.seq, total, accepted)
            else:
                self._accepted(message, segment.seq, accepted)
            submitted += 1
        if unresolved is not None:
            return self._retry_later(message, unresolved)  # same client reference next time
        if finished is not None:
            return self._finished(message, finished, submitted)
        return self._finish(message, total, submitted)

    def _submission(
        self, message: Message, encoded: EncodedMessage, segment: Segment, total: int
    ) -> SegmentSubmission:
        return SegmentSubmission(
            message_id=message.id,
            seq=segment.seq,
            total=total,
            to=message.to,
            sender=message.sender,
            udh=segment.udh,
            payload=segment.payload,
            data_coding=segment.data_coding,
            text=segment.text,
            full_text=encoded.text,
            receipt_url=segment_receipt_url(self.receipt_url, message.id, segment.seq),
            # Always: the handset outcome drives the message state and GET /sms/{id},
            # whether or not the client asked for receipts.
            want_receipt=True,
        )

    def _accepted(self, message: Message, seq: int, accepted: Accepted) -> None:
        """Store the carrier id; apply receipts that came for it before it was stored (a
        resend after a run died answered with the first id)."""
        carrier = accepted.carrier or self.carrier.name
        _, parked = self.store.accept_segment(
            message.id, seq, carrier, accepted.carrier_id, sent=accepted.awaiting_ack
        )
        for receipt in parked:
            ReceiptIntake(self.store, self.publisher, self.receipts).apply_to(
                message.id, seq, receipt
            )

    def _accepted_last(
        self, message: Message, seq: int, total: int, accepted: Accepted
    ) -> Finished | None:
        """`_accepted` and `Store.finish` in one atomic step; None (not finished) when receipts
        were parked for the carrier id: they are applied first and `_finish` follows."""
        carrier = accepted.carrier or self.carrier.name
        _, parked, finished = self.store.accept_and_finish(
            message.id, seq, carrier, accepted.carrier_id, total, sent=accepted.awaiting_ack
        )
        for receipt in parked:
            ReceiptIntake(self.store, self.publisher, self.receipts).apply_to(
                message.id, seq, receipt
            )
        return finished

    def _unknown(self, message: Message, seq: int, exc: CarrierUnknownOutcomeError) -> None:
        """Record (and count) a segment that may or may not have reached the carrier."""
        code = "unknown_outcome"
        self.store.mark_unknown(message.id, seq, code, f"{exc.code or code}: {exc}")
        self.store.add_event(message.id, "unknown_outcome", seq=seq, code=exc.code)
        log.warning(
            "carrier outcome unknown",
            extra={"message_id": message.id, "seq": seq, "code": exc.code},
        )

    def _reject_rest(
        self, message: Message, seq: int, total: int, exc: CarrierRejectedError
    ) -> None:
        """A rejected segment fails the message: later segments are not sent at all."""
        code = exc.code or "rejected"
        self.store.record_segment_failure(
            message.id, seq, SegmentStatus.REJECTED, code, exc.message
        )
        for later in range(seq + 1, total + 1):
            if self.store.claim_segment(message.id, later):
                self.store.record_segment_failure(
                    message.id,
                    later,
                    SegmentStatus.FAILED,
                    "not_sent",
                    "an earlier segment was rejected",
                )
        self.store.set_fields(message.id, {"error_code": code, "error_message": exc.message})

    def _retry_later(self, message: Message, exc: CarrierError) -> SendOutcome:
        if exc.code in PACING_CODES:
            # Our own shared limit or breaker said wait: not an attempt the carrier failed, so
            # not counted against MAX_SEND_ATTEMPTS (validity, if set, still ends it: `send`).
            attempts = 0
            delay = retry_delay(1, exc.retry_after)
        else:
            attempts = self.store.count_send_attempt(message.id)
            if attempts >= MAX_SEND_ATTEMPTS:
                return self._give_up(message, exc)
            delay = retry_delay(attempts, exc.retry_after)
        self.store.add_event(
            message.id, "retry", attempt=attempts, code=exc.code, delay_ms=int(delay * 1000)
        )
        self.publisher.publish_later(SEND_SMS, [message.id], lane_of(message), delay)
        # The reconciler leaves the message alone until the retry is due.
        self.store.expect_progress(message.id, now_ms() + int(delay * 1000))
        return SendOutcome(status=MessageStatus.SUBMITTING, retry_in=delay)

    def _give_up(self, message: Message, exc: CarrierError) -> SendOutcome:
        """Too many transient failures: mark what is still pending as failed (segments whose
        outcome is unknown stay so, and fail the submission too)."""
        for state in self.store.segments(message.id, message.segments):
            if state.status == SegmentStatus.PENDING and self.store.claim_segment(
                message.id, state.seq
            ):
                self.store.record_segment_failure(
                    message.id, state.seq, SegmentStatus.FAILED, exc.code or "unavailable", str(exc)
                )
        self.store.set_fields(
            message.id, {"error_code": exc.code or "unavailable", "error_message": str(exc)}
        )
        return self._finish(message, self._total(message), 0)

    def _finish(self, message: Message, total: int, submitted: int) -> SendOutcome:
        finished = self.store.finish(message.id, total)  # opens the client receipt, atomically
        return self._finished(message, finished, submitted)

    def _finished(self, message: Message, finished: Finished, submitted: int) -> SendOutcome:
        """Queue the client receipt finishing opened; the run's outcome."""
        if finished.outcome is None:
            return SendOutcome(status=MessageStatus.SUBMITTING, submitted=submitted)
        if finished.receipt_level:
            self._publish_receipt(message, finished.receipt_level)
        return SendOutcome(status=finished.outcome, submitted=submitted)

    def _publish_receipt(self, message: Message, level: int) -> None:
        if self.receipts is None:
            self.publisher.publish(POST_RECEIPT, [message.id, level], Queue.DLR)
            return
        where = Routing(message.dlr_url, message.dlr_method, message.dlr_batch, message.key_id)
        self.receipts.route([(message.id, level)], routing={message.id: where})

    def _queue_receipts(self, message: Message, outcome: str, *, final: bool) -> None:
        """Level 1 reports the submission; a final failure also answers a level-2-only request."""
        if not message.dlr:
            return
        if ReceiptLevel.wants_smsc(message.dlr_level):
            level = 1
        elif final:
            level = 2  # level 2 alone still hears about a rejection / failure / expiry
        else:
            return
        if self.store.open_receipt(message.id, level):
            self._publish_receipt(message, level)
