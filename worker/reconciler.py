"""The reconciler: finds messages and receipts that stopped moving, and moves them again.

It runs in the scheduler process (`smsq scheduler`, the lock holder) every `interval` seconds
and works from the store's watch lists (sorted sets scored by when progress is due), so a pass
costs what is overdue, never a scan of every message.

- `watch:submit`: a message not yet submitted, overdue by `grace`. Its task was lost (a publish
  lost between store and queue, a task popped by a worker that died, prefetched tasks of a
  killed worker) or a segment claim is stuck. A claim older than `claim_lease` (its run died
  between claim and submit, or between submit and storing the carrier id) becomes `unknown`,
  counted as `stale_claim`: the send task resends it with the same client reference only where
  the carrier honours it, else the submission fails with `unknown_outcome` (never a blind
  resend). Then the send task is published again; it is idempotent. A lane whose queue is
  longer than `backlog` still holds the task, so its messages are looked at again later.
  A submission waiting only for segments `sent` (a gateway queued them, the SMSC's answer
  comes as a receipt) is not republished: it is looked at again `ack_deadline` after its
  oldest such segment was submitted, and then each segment still `sent` becomes `unknown`
  (error `no_smsc_answer`, counted), which fails the submission and sends its receipt.
- `watch:delivery`: an accepted message with no terminal receipt `receipt_deadline` after
  acceptance. Each segment still `accepted` gets a synthetic `expired` (error `no_receipt`),
  which makes the message final and sends its level-2 receipt.
- `watch:receipt`: a client receipt still open, sending (its lease ran out) or waiting, overdue
  by `grace`: its task is published again (the receipt's claim makes a duplicate harmless).
- `watch:inbox`: an inbound carrier receipt request kept in the inbox and not applied `grace`
  after it came (its task was lost): queued again (applying a receipt twice changes nothing).
- `mo:watch`: an inbound message's webhook still due, or sending past its lease, overdue by
  `grace`: routed again (`sms.mo.route`; its claim makes a duplicate harmless), and looked at
  again `grace` later.

Republishing one item again backs off: grace × 2^n after the n-th time. Before the watch
lists, a pass puts back the tasks dead workers held (`worker.redelivery`, after
`unacked_after` seconds rather than Celery's hour).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from worker.clock import now_ms
from worker.contract import (
    FINAL_STATUSES,
    POST_RECEIPT,
    RECEIPT_DONE,
    ROUTE_MO,
    SEND_SMS,
    MessageStatus,
    Queue,
    ReceiptState,
    SegmentStatus,
)
from worker.queueing import Publisher
from worker.receipts.intake import nudge
from worker.sending import lane_for
from worker.settings import Settings
from worker.store import (
    DELIVERY_WATCH_KEY,
    RECEIPT_WATCH_KEY,
    SUBMIT_WATCH_KEY,
    SegmentState,
    Store,
    message_key,
)
from worker.store.inbox import Inbox
from worker.store.keys import INBOX_KEY, INBOX_WATCH_KEY, MO_WATCH_KEY
from worker.store.receipts import receipt_field

log = logging.getLogger(__name__)

_UNSUBMITTED = frozenset({MessageStatus.QUEUED, MessageStatus.SCHEDULED, MessageStatus.SUBMITTING})
MAX_BACKOFF_DOUBLINGS = 6


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    """Timings of the reconciler, in seconds (and a queue length, and a batch size)."""

    interval: float = 10.0  # between passes
    grace: float = 60.0  # overdue by this much before anything is done
    claim_lease: float = 60.0  # a segment claim older than this belongs to a dead run
    receipt_deadline: float = 48 * 3600.0  # accepted this long without a terminal receipt
    ack_deadline: float = 3600.0  # `sent` this long without the SMSC's answer
    backlog: int = 100  # a lane with more queued tasks than this still holds its tasks
    batch: int = 500  # items per watch list per pass
    unacked_after: float = 300.0  # a task taken and not acknowledged this long is put back

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconcilerConfig:
        """Defaults with a claim lease that outlasts the slowest possible carrier request."""
        # A request may wait for a pooled connection, connect, write and read, each up to its
        # timeout (worker.runtime); a claim twice as old as that belongs to a dead run.
        request = settings.carrier_connect_timeout + 3 * settings.carrier_read_timeout
        return cls(claim_lease=max(5.0, 2 * request), ack_deadline=settings.reconcile_ack_deadline)


@dataclass(slots=True)
class Pass:
    """What one pass did, by action."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, action: str) -> None:
        self.counts[action] = self.counts.get(action, 0) + 1


def _awaiting_ack(segments: list[SegmentState]) -> bool:
    """Only segments `sent` (their SMSC's answer to come as a receipt) keep the submission
    open: no send task can move it on."""
    open_states = {SegmentStatus.PENDING, SegmentStatus.SUBMITTING, SegmentStatus.UNKNOWN}
    states = {state.status for state in segments}
    return SegmentStatus.SENT in states and not states & open_states


def _unfinished(fields: dict[str, str]) -> bool:
    """Final by a receipt that overtook the end of its submission, whose run then died: the
    send task still has to record the outcome (and open the level-1 receipt)."""
    status = fields.get("status")
    return status in FINAL_STATUSES and status != "cancelled" and "submit_outcome" not in fields


class Reconciler:
    """One pass at a time over the three watch lists (`run_once`)."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        config: ReconcilerConfig | None = None,
        clock: Callable[[], int] = now_ms,
        redelivery: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.publisher = publisher
        self.config = config or ReconcilerConfig()
        self.clock = clock
        self.redelivery = redelivery
        self._busy: dict[str, bool] = {}  # queue -> backlogged, per pass

    def run_once(self) -> Pass:
        """Look at everything overdue now; returns what was done."""
        done = Pass()
        restored = self.redelivery() if self.redelivery is not None else 0
        if restored:
            done.counts["restored_tasks"] = restored
            self.store.count("restored_tasks", restored)
        now = self.clock()
        grace_ms = self._ms(self.config.grace)
        deadline_ms = self._ms(self.config.receipt_deadline)
        self._busy = {}
        ids = self._due(SUBMIT_WATCH_KEY, now - grace_ms)
        for message_id, fields in zip(ids, self._fields(ids), strict=True):
            done.add(self._submission(message_id, fields, now))
        for member in self._due(RECEIPT_WATCH_KEY, now - grace_ms):
            done.add(self._receipt(member, now))
        for message_id in self._due(DELIVERY_WATCH_KEY, now - deadline_ms):
            done.add(self._delivery(message_id, now))
        overdue = self._due(INBOX_WATCH_KEY, now - grace_ms)
        if overdue:
            done.add(self._inbound(overdue, now))
        for mo_id in self._due(MO_WATCH_KEY, now - grace_ms):
            done.add(self._mo_webhook(mo_id, now))
        if any(action not in ("busy", "in_flight", "awaiting_ack") for action in done.counts):
            log.info("reconciler pass: %s", done.counts)
        return done

    def _due(self, key: str, before: int) -> list[str]:
        members = self.redis.zrangebyscore(key, "-inf", before, start=0, num=self.config.batch)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def _fields(self, message_ids: list[str]) -> list[dict[str, str]]:
        """What the submission check needs of each message, in one round trip."""
        names = ("status", "priority", "segments", "submit_outcome")
        pipe = self.redis.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hmget(message_key(message_id), names)
        replies = pipe.execute()
        return [{k: v for k, v in zip(names, r, strict=True) if v is not None} for r in replies]

    @staticmethod
    def _ms(seconds: float) -> int:
        return int(seconds * 1000)

    # -- submissions ------------------------------------------------------------------------
    def _submission(self, message_id: str, fields: dict[str, str], now: int) -> str:
        if fields.get("status") not in _UNSUBMITTED and not _unfinished(fields):
            self.redis.zrem(SUBMIT_WATCH_KEY, message_id)  # submitted, final, or gone
            return "dropped"
        stale = 0
        if fields["status"] == MessageStatus.SUBMITTING:
            segments = self.store.segments(message_id, int(fields.get("segments") or 0))
            stale = self._expire_claims(message_id, segments, now)
            if not stale and _awaiting_ack(segments):
                return self._awaiting_ack(message_id, segments, now)
        lane = lane_for(fields.get("priority", ""))
        if not stale and self._backlogged(lane):
            self.store.expect_progress(message_id, now)  # its task is likely still queued
            return "busy"
        self.publisher.publish(SEND_SMS, [message_id], lane)
        self._back_off(SUBMIT_WATCH_KEY, message_id, "reconciled", now)
        self.store.add_event(message_id, "reconciled", stale_claims=stale)
        self.store.count("republished_send")
        return "republished_send"

    def _expire_claims(self, message_id: str, segments: list[SegmentState], now: int) -> int:
        """Turn claims older than the lease into `unknown` outcomes; returns how many."""
        before = now - self._ms(self.config.claim_lease)
        stale = 0
        for state in segments:
            if state.status != SegmentStatus.SUBMITTING:
                continue
            if self.store.mark_unknown(
                message_id, state.seq, "unknown_outcome", "the run holding the claim died",
                claimed_before=before, counter="stale_claim",
            ):  # fmt: skip
                stale += 1
        return stale

    def _awaiting_ack(self, message_id: str, segments: list[SegmentState], now: int) -> str:
        """Segments `sent`, the SMSC's answer still to come: wait until `ack_deadline` after
        the oldest was submitted; then each still `sent` becomes `unknown`, which fails the
        submission (`no_smsc_answer`) and opens its receipt."""
        sent = [state for state in segments if state.status == SegmentStatus.SENT]
        due = min(state.submitted_at or now for state in sent) + self._ms(self.config.ack_deadline)
        if now < due:
            # The pass looks at what is `grace` overdue: come back exactly at the deadline.
            self.redis.zadd(SUBMIT_WATCH_KEY, {message_id: due - self._ms(self.config.grace)})
            return "awaiting_ack"
        reason = f"no answer from the SMSC within {self.config.ack_deadline:g} s"
        for state in sent:
            result = self.store.apply_receipt(
                message_id, state.seq, SegmentStatus.UNKNOWN, "no_smsc_answer", reason
            )
            for level in result.receipt_levels:
                self.publisher.publish(POST_RECEIPT, [message_id, level], Queue.DLR)
        self.store.count("no_smsc_answer", len(sent))
        self.store.add_event(message_id, "no_smsc_answer", segments=len(sent))
        return "no_smsc_answer"

    def _backlogged(self, queue: str) -> bool:
        if queue not in self._busy:
            self._busy[queue] = int(self.redis.llen(queue)) > self.config.backlog
        return self._busy[queue]

    def _back_off(self, key: str, member: str, counter_field: str, now: int) -> None:
        """Look again after grace × 2^n, n the times this item was republished."""
        message_id = member.partition(":")[0]
        times = int(self.redis.hincrby(message_key(message_id), counter_field, 1))
        delay = self.config.grace * 2 ** min(times - 1, MAX_BACKOFF_DOUBLINGS)
        self.redis.zadd(key, {member: now + self._ms(delay)})

    # -- terminal receipts from the carrier ---------------------------------------------------
    def _delivery(self, message_id: str, now: int) -> str:
        fields = self.store.fields(message_id)
        if fields.get("status") != MessageStatus.ACCEPTED:
            self.redis.zrem(DELIVERY_WATCH_KEY, message_id)
            return "dropped"
        reason = f"no terminal receipt from the carrier within {self.config.receipt_deadline:g} s"
        for state in self.store.segments(message_id, int(fields.get("segments") or 0)):
            if state.status != SegmentStatus.ACCEPTED:
                continue
            result = self.store.apply_receipt(
                message_id, state.seq, SegmentStatus.EXPIRED, "no_receipt", reason
            )
            for level in result.receipt_levels:
                self.publisher.publish(POST_RECEIPT, [message_id, level], Queue.DLR)
        if self.store.fields(message_id).get("status") in FINAL_STATUSES:
            self.store.count("synthetic_expired")
            self.store.add_event(message_id, "synthetic_expiry")
            return "synthetic_expired"
        self.redis.zadd(DELIVERY_WATCH_KEY, {message_id: now})  # not all segments were accepted
        return "in_flight"

    # -- receipts to the client ---------------------------------------------------------------
    def _receipt(self, member: str, now: int) -> str:
        message_id, _, level = member.rpartition(":")
        names = [receipt_field(level, "state"), receipt_field(level, "lease")]
        state, lease = cast(list[str | None], self.redis.hmget(message_key(message_id), names))
        if state is None or state in RECEIPT_DONE:
            self.redis.zrem(RECEIPT_WATCH_KEY, member)
            return "dropped"
        if state == ReceiptState.SENDING and int(lease or 0) > now:
            self.redis.zadd(RECEIPT_WATCH_KEY, {member: int(lease or 0)})  # its attempt runs
            return "in_flight"
        if state == ReceiptState.WAITING and self._level_one_pending(message_id):
            self.redis.zadd(RECEIPT_WATCH_KEY, {member: now})  # level 1 releases it when done
            return "in_flight"
        if self._backlogged(Queue.DLR.value):
            self.redis.zadd(RECEIPT_WATCH_KEY, {member: now})
            return "busy"
        self.publisher.publish(POST_RECEIPT, [message_id, int(level)], Queue.DLR)
        self._back_off(RECEIPT_WATCH_KEY, member, receipt_field(level, "reconciled"), now)
        self.store.count("republished_receipt")
        return "republished_receipt"

    # -- receipts from the carrier, kept in the inbox ---------------------------------------
    def _inbound(self, entries: list[str], now: int) -> str:
        """Requests not applied `grace` after they came (their drain died, or its task was
        lost): start a drain unless one runs (it takes them when their lease ends)."""
        found = self.redis.hmget(INBOX_KEY, entries)
        gone = [entry for entry, raw in zip(entries, found, strict=True) if raw is None]
        if gone:
            self.redis.zrem(INBOX_WATCH_KEY, *gone)
        if len(gone) == len(entries):
            return "dropped"
        if not nudge(Inbox(self.redis), self.publisher, now, now - self._ms(self.config.grace)):
            return "busy"
        self.store.count("republished_inbound")
        return "republished_inbound"

    # -- inbound messages' webhooks ---------------------------------------------------------
    def _mo_webhook(self, mo_id: str, now: int) -> str:
        """Route the webhook again (the task drops it from the watch if it is done)."""
        if self._backlogged(Queue.DLR.value):
            self.redis.zadd(MO_WATCH_KEY, {mo_id: now})
            return "busy"
        self.publisher.publish(ROUTE_MO, [mo_id], Queue.DLR)
        self.redis.zadd(MO_WATCH_KEY, {mo_id: now + self._ms(self.config.grace)})
        self.store.count("republished_mo")
        return "republished_mo"

    def _level_one_pending(self, message_id: str) -> bool:
        state = self.redis.hget(message_key(message_id), receipt_field(1, "state"))
        return state is not None and state not in RECEIPT_DONE
