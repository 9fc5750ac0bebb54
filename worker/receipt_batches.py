"""Batched client receipts (`dlr-batch`): many receipts to one `dlr-url` in one signed POST.

Whatever publishes a receipt (`sms.dlr.post`: opened, a level 2 released, a retry, the
reconciler, a replay) ends in `ReceiptDeliverer.deliver`, which hands a receipt of a `dlr-batch`
message to `ReceiptBatches.enqueue` instead of sending it alone:

- `enqueue` appends `{id}:{level}` to the list of its group (one per dlr-url and API key, so a
  body holds one tenant's receipts under one signing secret). The first item of a window sets
  the group's flag (`SET NX PX`) and schedules one `sms.dlr.flush` a window later; a list that
  reaches a multiple of `max_size` is flushed at once.
- `BatchFlusher.flush` takes up to `max_size` items (atomically: the flag is cleared when the
  list is left empty, so the next item opens a new window; if items are left, another flush is
  published at once), claims each receipt exactly as a single delivery does
  (`Store.claim_receipt`: a level 2 whose level 1 is not done parks, and its release comes back
  here), sends one POST `{"receipts": [...]}` signed under a `batch_...` webhook-id, and then
  closes each receipt `sent` (2xx) or `gone` (410), or releases and retries each on the
  durable schedule (anything else), exactly as a single delivery would.

Nothing can be stranded in a list: an item stays on `watch:receipt` until its receipt is
closed, so if a flush is lost the reconciler publishes `sms.dlr.post` again, which enqueues it
again (a duplicate item finds its receipt claimed or done and is skipped).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.callbacks import CallbackSender
from worker.clock import now_ms
from worker.contract import FLUSH_RECEIPTS, POST_RECEIPT, Queue
from worker.errors import WebhookError, WebhookGoneError
from worker.keys import KeyStore
from worker.queueing import Publisher
from worker.receipts import ReceiptDeliverer, ReceiptOutcome, build_payload, lease_ms
from worker.settings import Settings
from worker.store import Message, Store, message_key, parse_segments, segments_key

BATCH_PREFIX = "smsq:dlr:batch:"
# The flag outlives its window by this much: if its flush is lost, new items wait at most this
# long for a new window (and the reconciler recovers them anyway).
FLAG_SLACK_MS = 30_000
# A list nobody flushes (its receipts all done elsewhere) does not stay for ever.
LIST_TTL_MS = 24 * 3600 * 1000

# KEYS: group list, group flag. ARGV: member, max size, flag ttl (ms), list ttl (ms).
# Returns {1 if this item opened a window, 1 if the list just filled a batch}.
ENQUEUE = """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local opened = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) and 1 or 0
local full = (n % tonumber(ARGV[2]) == 0) and 1 or 0
return {opened, full}
"""

# KEYS: group list, group flag. ARGV: max size, flag ttl (ms). Takes up to max items; clears
# the flag when none are left (the next item opens a window), else keeps it while the caller
# publishes the next flush. Returns {items, how many are left}.
TAKE = """
local items = redis.call('LPOP', KEYS[1], tonumber(ARGV[1])) or {}
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[2])
else redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return {items, left}
"""


def group_key(dlr_url: str, key_id: str) -> str:
    """The batch group of a receipt: its URL and the API key that signs it."""
    return hashlib.sha256(f"{key_id}\n{dlr_url}".encode()).hexdigest()[:32]


def list_key(group: str) -> str:
    return f"{BATCH_PREFIX}{group}"


def flag_key(group: str) -> str:
    return f"{BATCH_PREFIX}{group}:flag"


def new_batch_id() -> str:
    """The `webhook-id` of one batch POST (its items keep their own `event_id`)."""
    return f"batch_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """At most `max_size` receipts per POST, sent at least every `window_ms`."""

    max_size: int = 100
    window_ms: int = 200

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchConfig:
        return cls(max_size=settings.dlr_batch_max, window_ms=settings.dlr_batch_window_ms)

    @property
    def flag_ttl_ms(self) -> int:
        return self.window_ms + FLAG_SLACK_MS


class ReceiptBatches:
    """The per-group lists of receipts waiting to be sent together."""

    def __init__(self, store: Store, publisher: Publisher, config: BatchConfig) -> None:
        self.store = store
        self.publisher = publisher
        self.config = config
        self._enqueue = store.redis.register_script(ENQUEUE)
        self._take = store.redis.register_script(TAKE)

    def enqueue(self, message_id: str, level: int, message: Message | None = None) -> bool:
        """Add the receipt to its group's batch; False if its message did not ask for one.
        `message`: the stored message when the caller has it (saves reading it again)."""
        fields: Sequence[object]
        if message is not None:
            fields = ["1" if message.dlr_batch else "0", message.dlr_method, message.dlr_url,
                      message.key_id]  # fmt: skip
        else:
            fields = self.store.redis.hmget(
                message_key(message_id), ["dlr_batch", "dlr_method", "dlr_url", "key_id"]
            )
        return self._add(message_id, level, fields)

    def _add(self, message_id: str, level: int, fields: Sequence[object]) -> bool:
        wants, method, url, key_id = fields
        if wants != "1" or method == "GET" or not url:
            return False
        group = group_key(str(url), str(key_id or ""))
        opened, full = self._enqueue(
            keys=[list_key(group), flag_key(group)],
            args=[f"{message_id}:{level}", self.config.max_size, self.config.flag_ttl_ms,
                  LIST_TTL_MS],
        )  # fmt: skip
        if opened:
            delay = self.config.window_ms / 1000
            self.publisher.publish_later(FLUSH_RECEIPTS, [group], Queue.DLR, delay)
        if full:
            self.publisher.publish(FLUSH_RECEIPTS, [group], Queue.DLR)
        return True

    def enqueue_many(self, refs: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        """`enqueue` for many receipts, their messages read in one round trip; returns those
        whose messages did not ask for batching (the caller publishes them)."""
        if not refs:
            return []
        pipe = self.store.redis.pipeline(transaction=False)
        for message_id, _ in refs:
            pipe.hmget(message_key(message_id), ["dlr_batch", "dlr_method", "dlr_url", "key_id"])
        alone: list[tuple[str, int]] = []
        for (message_id, level), fields in zip(refs, pipe.execute(), strict=True):
            if not self._add(message_id, level, fields):
                alone.append((message_id, level))
        return alone

    def take(self, group: str) -> list[tuple[str, int]]:
        """Up to `max_size` waiting receipts of the group, first come first, without repeats;
        publishes the next flush at once when more are waiting."""
        items, left = self._take(
            keys=[list_key(group), flag_key(group)],
            args=[self.config.max_size, self.config.flag_ttl_ms],
        )
        if int(left):
            self.publisher.publish(FLUSH_RECEIPTS, [group], Queue.DLR)
        refs: dict[tuple[str, int], None] = {}
        for item in items:
            message_id, _, level = str(item).rpartition(":")
            refs[(message_id, int(level))] = None
        return list(refs)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One claimed receipt of a batch, ready to send."""

    message_id: str
    level: int
    attempt: int
    fields: dict[str, str]
    payload: dict[str, Any]

    @property
    def destination(self) -> tuple[str, str]:
        return self.fields.get("dlr_url", ""), self.fields.get("key_id", "")


class BatchFlusher:
    """Sends a group's waiting receipts in one POST and settles each of them."""

    def __init__(
        self,
        batches: ReceiptBatches,
        keys: KeyStore,
        sender: CallbackSender,
        deliverer: ReceiptDeliverer,
    ) -> None:
        self.batches = batches
        self.store = batches.store
        self.keys = keys
        self.sender = sender
        self.deliverer = deliverer

    def flush(self, group: str) -> str:
        """Send what waits in the group now; returns a summary of what came of it."""
        refs = self.batches.take(group)
        claimed = self._claim(refs)
        results: dict[str, int] = {}
        for destination, items in _by_destination(self._load(claimed)).items():
            result = self._send(destination, items)
            results[result] = results.get(result, 0) + len(items)
        skipped = len(refs) - len(claimed)
        return " ".join(f"{k}={v}" for k, v in sorted({**results, "skipped": skipped}.items()))

    def _claim(self, refs: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
        """`(message id, level, seq)` of the receipts this flush may send now (a parked level 2
        comes back when its level 1 closes; a done or taken one is someone else's)."""
        if not refs:
            return []
        seqs = self.store.claim_receipts(refs, self.deliverer.lease_ms)
        return [(m, level, seq) for (m, level), seq in zip(refs, seqs, strict=True) if seq > 0]

    def _load(self, claimed: list[tuple[str, int, int]]) -> list[BatchItem]:
        """Each claimed receipt's message, segments and attempt number, in two round trips."""
        if not claimed:
            return []
        pipe = self.store.redis.pipeline(transaction=False)
        for message_id, level, _ in claimed:
            pipe.hgetall(message_key(message_id))
            pipe.hgetall(segments_key(message_id))
            pipe.hincrby(message_key(message_id), f"rcpt:{level}:attempts", 1)
        replies = pipe.execute()
        items = []
        for index, (message_id, level, seq) in enumerate(claimed):
            fields, raw_segments, attempt = replies[3 * index : 3 * index + 3]
            segments = parse_segments(raw_segments, int(fields.get("segments") or 0))
            payload = build_payload(fields, segments, level, seq, int(attempt))
            items.append(BatchItem(message_id, level, int(attempt), fields, payload))
        return items

    def _send(self, destination: tuple[str, str], items: list[BatchItem]) -> str:
        url, key_id = destination
        secrets = self.keys.signing_secrets(key_id)
        started = now_ms()
        if not secrets:  # the key was deleted: we never send unsigned receipts
            for item in items:
                self._record(item, started, None, "unsigned_refused", "")
                self.deliverer.dead(item.message_id, item.level, None)
            return "dead"
        batch_id = new_batch_id()
        try:
            status_code = self.sender.send_batch(
                url, [item.payload for item in items], webhook_id=batch_id, secrets=secrets
            )
        except WebhookGoneError as exc:
            self._settle(items, "gone", exc.status_code, started, batch_id)
            return "gone"
        except WebhookError as exc:
            for item in items:
                self._record(item, started, exc.status_code, type(exc).__name__, batch_id)
                self._retry(item, exc)
            return "retry"
        self._settle(items, "sent", status_code, started, batch_id)
        return "sent"

    def _settle(
        self, items: list[BatchItem], outcome: str, code: int | None, started: int, batch_id: str
    ) -> None:
        """Close every receipt of the batch (first: they are done), then record the attempt;
        a level 2 a close releases goes straight into its batch."""
        refs = [(item.message_id, item.level) for item in items]
        released = self.store.close_receipts(refs, outcome)
        ms = now_ms() - started
        self.store.add_events(
            [
                (item.message_id, f"receipt_{outcome}", _detail(item, code, ms, batch_id))
                for item in items
            ]
        )
        freed = [(item.message_id, 2) for item, f in zip(items, released, strict=True) if f]
        for message_id, level in self.batches.enqueue_many(freed):  # normally none is left
            self.deliverer.publisher.publish(POST_RECEIPT, [message_id, level], Queue.DLR)

    def _record(
        self, item: BatchItem, started: int, code: int | None, result: str, batch_id: str
    ) -> None:
        detail = {"batch": batch_id} if batch_id else {}
        self.deliverer.record(
            item.message_id, item.level, item.attempt, started, code, result, **detail
        )

    def _retry(self, item: BatchItem, exc: WebhookError) -> ReceiptOutcome:
        return self.deliverer.retry_or_die(
            item.message_id, item.level, item.attempt, item.fields, exc
        )


def _detail(item: BatchItem, code: int | None, ms: int, batch_id: str) -> dict[str, Any]:
    return {
        "level": item.level,
        "attempt": item.attempt,
        "status_code": code,
        "ms": ms,
        "batch": batch_id,
    }


def _by_destination(items: Sequence[BatchItem]) -> dict[tuple[str, str], list[BatchItem]]:
    """Items by (dlr-url, key id): one group normally; a POST never mixes two."""
    groups: dict[tuple[str, str], list[BatchItem]] = {}
    for item in items:
        groups.setdefault(item.destination, []).append(item)
    return groups


def batching_deliverer(
    store: Store, keys: KeyStore, sender: CallbackSender, publisher: Publisher, settings: Settings
) -> tuple[ReceiptDeliverer, BatchFlusher]:
    """A worker's receipt deliverer, routing `dlr-batch` receipts into batches, and the
    flusher that sends those."""
    batches = ReceiptBatches(store, publisher, BatchConfig.from_settings(settings))
    deliverer = ReceiptDeliverer(
        store, keys, sender, publisher, lease_ms=lease_ms(settings), batches=batches
    )
    return deliverer, BatchFlusher(batches, keys, sender, deliverer)
