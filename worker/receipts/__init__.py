"""Receipts to the client's `dlr-url`: build (DESIGN.md §3), deliver, retry, dead-letter.

One receipt per message per level, never per segment. Its `event_id` (the `webhook-id`) is stable
across attempts; its `seq` increases per message in the order receipts are sent, and a level-2
receipt of a level-3 message waits until the level-1 receipt is done. Failed attempts are retried
through the durable scheduler on `RETRY_SCHEDULE_SECONDS` (with jitter) for up to 24 h; a 410
stops at once; after the last attempt the receipt goes to the dead-letter set, from which
`smsq dlr replay` sends it again (`replay`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from worker.callbacks import CallbackSender
from worker.clock import iso_ms, now_ms
from worker.contract import MESSAGE_STATUS_WORDS, POST_RECEIPT, MessageStatus, Queue, SegmentStatus
from worker.errors import WebhookError, WebhookGoneError
from worker.keys import KeyStore
from worker.queueing import Publisher
from worker.settings import Settings
from worker.store import DEAD_LETTER_KEY, SegmentState, Store

log = logging.getLogger(__name__)

# After attempt n fails, the next one comes RETRY_SCHEDULE_SECONDS[n-1] later (± 20 % jitter):
# about 26 h in all, the Standard Webhooks example schedule.
RETRY_SCHEDULE_SECONDS = (5, 30, 120, 600, 1800, 3600, 7200, 18000, 36000, 28800)
GIVE_UP_AFTER_MS = 24 * 3600 * 1000

_ACCEPTED = {
    SegmentStatus.ACCEPTED,
    SegmentStatus.DELIVERED,
    SegmentStatus.UNDELIVERED,
    SegmentStatus.EXPIRED,
}
_FAILED = {
    SegmentStatus.REJECTED,
    SegmentStatus.FAILED,
    SegmentStatus.UNKNOWN,
    SegmentStatus.UNDELIVERED,
    SegmentStatus.EXPIRED,
}


def lease_ms(settings: Settings) -> int:
    """How long a claimed receipt is ours: longer than one attempt can take (connect, then
    write and read, each at most its timeout), plus a margin. After it, it may be retried."""
    attempt = 2 * settings.dlr_connect_timeout + 2 * settings.dlr_read_timeout
    return int((attempt + 2.0) * 1000)


def event_id(message_id: str, level: int) -> str:
    """The receipt's `webhook-id`: stable across attempts, without dots (Standard Webhooks)."""
    return f"evt_{message_id}_{level}"


def receipt_status(fields: dict[str, str], level: int) -> str:
    """Level 1 reports the submission outcome; level 2 the message's final state."""
    if level == 1:
        return fields.get("submit_outcome") or fields.get("status", "")
    return fields.get("status", "")


def status_word(status: str) -> str:
    """The SMPP / Jasmin-style word for a status (`DELIVRD`, `ESME_ROK`…)."""
    try:
        return MESSAGE_STATUS_WORDS.get(MessageStatus(status), "UNKNOWN")
    except ValueError:
        return "UNKNOWN"


def first_error(fields: dict[str, str], segments: list[SegmentState]) -> dict[str, str] | None:
    for state in segments:
        if state.error_code and state.status in _FAILED:
            return {"code": state.error_code, "message": state.error_message or ""}
    if fields.get("error_code"):
        return {"code": fields["error_code"], "message": fields.get("error_message", "")}
    return None


def build_payload(
    fields: dict[str, str], segments: list[SegmentState], level: int, seq: int, attempt: int
) -> dict[str, Any]:
    """The receipt body (DESIGN.md §3) from the stored message and its segments."""
    status = receipt_status(fields, level)
    ok = status in (MessageStatus.ACCEPTED, MessageStatus.DELIVERED)
    done_at = fields.get("done_at") if level == 2 else fields.get("submitted_at")
    return {
        "id": fields["id"],
        "level": level,
        "status": status,
        "message_status": status_word(status),
        "to": fields.get("to", ""),
        "from": fields.get("from", ""),
        "client_ref": fields.get("client_ref") or None,
        "segments": {
            "total": len(segments),
            "accepted": sum(s.status in _ACCEPTED for s in segments),
            "delivered": sum(s.status == SegmentStatus.DELIVERED for s in segments),
            "failed": sum(s.status in _FAILED for s in segments),
        },
        "carrier": next((s.carrier for s in segments if s.carrier), None),
        "error": None if ok else first_error(fields, segments),
        "submitted_at": iso_ms(_int(fields.get("submitted_at"))),
        "done_at": iso_ms(_int(done_at)),
        "event_id": event_id(fields["id"], level),
        "seq": seq,
        "attempt": attempt,
    }


def _int(value: str | None) -> int | None:
    return int(value) if value else None


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    """What one delivery attempt ended with: sent, parked, skipped, retry, gone or dead."""

    result: str
    status_code: int | None = None
    retry_in: float | None = None


class BatchRouter(Protocol):
    """Takes a receipt into a batch (`worker.receipt_batches`) when its message asked for one."""

    def enqueue(self, message_id: str, level: int) -> bool: ...


class ReceiptDeliverer:
    """Delivers receipts; one per worker process.

    With a `batches` router, a receipt whose message asked for `dlr-batch` is handed to it
    instead of being sent alone: every way a receipt comes here (opened, a level 2 released,
    a retry, the reconciler, a replay) therefore goes back into the batch path.
    """

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        sender: CallbackSender,
        publisher: Publisher,
        *,
        lease_ms: int = 30_000,
        batches: BatchRouter | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.sender = sender
        self.publisher = publisher
        self.lease_ms = lease_ms
        self.batches = batches

    def deliver(self, message_id: str, level: int) -> ReceiptOutcome:
        if self.batches is not None and self.batches.enqueue(message_id, level):
            return ReceiptOutcome("batched")  # the batch's flush claims and sends it
        seq = self.store.claim_receipt(message_id, level, self.lease_ms)
        if seq == -1:
            return ReceiptOutcome("parked")  # level 1 is not done yet; it will release us
        if seq == 0:
            return ReceiptOutcome("skipped")  # done already, or another worker has it
        fields = self.store.fields(message_id)
        segments = self.store.segments(message_id, int(fields.get("segments") or 0))
        attempt = self.store.receipt_attempt(message_id, level)
        payload = build_payload(fields, segments, level, seq, attempt)
        method = cast(Literal["GET", "POST"], fields.get("dlr_method") or "POST")
        secrets = self.keys.signing_secrets(fields.get("key_id", ""))
        started = now_ms()
        if not secrets:  # the key was deleted: we never send unsigned receipts
            self.record(message_id, level, attempt, started, None, "unsigned_refused")
            return self.dead(message_id, level, None)
        try:
            status_code = self.sender.send(
                fields["dlr_url"], method, payload, event_id=payload["event_id"], secrets=secrets
            )
        except WebhookGoneError as exc:
            self.record(message_id, level, attempt, started, exc.status_code, "gone")
            return self.close(message_id, level, "gone", exc.status_code)
        except WebhookError as exc:
            self.record(message_id, level, attempt, started, exc.status_code, type(exc).__name__)
            return self.retry_or_die(message_id, level, attempt, fields, exc)
        outcome = self.close(message_id, level, "sent", status_code)  # first: it is done
        self.record(message_id, level, attempt, started, status_code, "sent")
        return outcome

    def record(
        self,
        message_id: str,
        level: int,
        attempt: int,
        started: int,
        code: int | None,
        result: str,
        **detail: Any,
    ) -> None:
        """One attempt in the message's events (`GET /sms/{id}` history)."""
        self.store.add_event(
            message_id,
            f"receipt_{result}",
            level=level,
            attempt=attempt,
            status_code=code,
            ms=now_ms() - started,
            **detail,
        )

    def dead(self, message_id: str, level: int, code: int | None) -> ReceiptOutcome:
        """Give up on a claimed receipt: dead-lettered (replayable), counted, closed."""
        self.store.redis.zadd(DEAD_LETTER_KEY, {f"{message_id}:{level}": now_ms()})
        self.store.count("receipt_dead")
        self.store.add_event(message_id, "receipt_dead", level=level)
        log.warning("receipt dead-lettered", extra={"message_id": message_id, "level": level})
        return self.close(message_id, level, "dead", code)

    def close(self, message_id: str, level: int, outcome: str, code: int | None) -> ReceiptOutcome:
        """Mark a claimed receipt done; a level 2 it releases is published (and so batched
        again when its message asked for `dlr-batch`)."""
        if self.store.close_receipt(message_id, level, outcome):
            self.publisher.publish(POST_RECEIPT, [message_id, 2], Queue.DLR)
        return ReceiptOutcome(outcome, status_code=code)

    def retry_or_die(
        self, message_id: str, level: int, attempt: int, fields: dict[str, str], exc: WebhookError
    ) -> ReceiptOutcome:
        """After a failed attempt: release the receipt and schedule its next attempt durably
        (`RETRY_SCHEDULE_SECONDS`, never before `Retry-After`), or dead-letter it."""
        first = _int(fields.get(f"rcpt:{level}:first_attempt_at"))
        if first is None:
            first = now_ms()
            self.store.set_fields(message_id, {f"rcpt:{level}:first_attempt_at": str(first)})
        # Attempts before a replay do not count against the fresh schedule a replay starts.
        index = attempt - int(fields.get(f"rcpt:{level}:base") or 0) - 1
        if index >= len(RETRY_SCHEDULE_SECONDS) or now_ms() - first > GIVE_UP_AFTER_MS:
            return self.dead(message_id, level, exc.status_code)
        delay = RETRY_SCHEDULE_SECONDS[index] * random.uniform(0.8, 1.2)
        delay = max(delay, exc.retry_after or 0.0)
        self.store.release_receipt(message_id, level, now_ms() + int(delay * 1000))
        self.publisher.publish_later(POST_RECEIPT, [message_id, level], Queue.DLR, delay)
        return ReceiptOutcome("retry", status_code=exc.status_code, retry_in=delay)


def dead_letters(store: Store, since_ms: int = 0, until_ms: int | None = None) -> list[str]:
    """Dead-lettered receipts (`{message_id}:{level}`) that died in the time range."""
    upper: int | str = "+inf" if until_ms is None else until_ms
    return [str(m) for m in store.redis.zrangebyscore(DEAD_LETTER_KEY, since_ms, upper)]


def replay(store: Store, publisher: Publisher, targets: list[str]) -> int:
    """Send receipts again: each target is a message id (every level it opened) or a
    `{message_id}:{level}`. Same event id and seq, a fresh retry schedule; level 2 of a
    level-3 message still waits for level 1. Returns how many receipts were queued."""
    queued = 0
    for target in targets:
        message_id, _, only = target.partition(":")
        for level in (int(only),) if only else (1, 2):
            if store.replay_receipt(message_id, level):
                publisher.publish(POST_RECEIPT, [message_id, level], Queue.DLR)
                store.add_event(message_id, "receipt_replay", level=level)
                queued += 1
    return queued
