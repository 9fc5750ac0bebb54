"""Taking in one inbound (MO) message: reassemble, deduplicate, store, opt out, deliver.

Every carrier hands its MOs to `MoIntake.accept` (the HTTP route `/carriers/{name}/mo`, the
SMPP connector's `deliver_sm`, through `worker.mo.accept`):

1. The addresses are made canonical (`owners.canonical_number`).
2. A carrier's id seen before (within two days) is a repeat: the first MO's id comes back
   and nothing else happens — unless that MO was never stored (the first call lost Redis's
   reply, or failed): it is stored now, under the id the first call chose. A caller without a
   carrier's id may choose the MO's id itself (`mo_id`, the same on every repeat of the call:
   the SMPP connector's, one per deliver_sm); an MO already stored under it is a repeat.
3. A part of a multipart MO (UDH concatenation, 8- or 16-bit reference) is kept until every
   part came, in any order; the first part schedules a flush `SMSQ_MO_REASSEMBLY_SECONDS`
   later that stores whatever came then (`flush`), the missing parts named.
4. The whole MO is stored (`worker.store.mo`) under its owner (`owners`), counted, and an
   opt-out or opt-in keyword (`keywords`) changes the owner's opt-out list, or the
   deployment's when no key owns the number.
5. If its owner has an mo-url, its webhook goes into its endpoint's queue
   (`ReceiptRouter.route_mo`); the receipt engine delivers it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from worker import metrics
from worker.clock import now_ms
from worker.contract import FLUSH_MO_PARTS, Queue
from worker.encoding import udh as udh_codec
from worker.mo.keywords import Keyword, Keywords
from worker.mo.owners import Owner, Owners, canonical_number
from worker.optouts import DEPLOYMENT, OptOuts
from worker.queueing import Publisher, schedule_at, schedule_entry
from worker.receipts.config import EngineConfig
from worker.receipts.routing import ReceiptRouter
from worker.settings import Settings, get_settings
from worker.store.keys import mo_parts_key
from worker.store.mo import MoRecord, Parts, new_mo_id
from worker.store.receipts import ReceiptStore

log = logging.getLogger(__name__)

# Parts are kept this much longer than the wait, so the flush finds them however late it runs.
PARTS_SLACK_MS = 24 * 3600 * 1000
MAX_TEXT_CHARS = 255 * 160  # what 255 concatenated parts could carry, roughly


@dataclass(frozen=True, slots=True)
class Concat:
    """Where a part belongs: its message's reference, part count and place."""

    reference: int
    total: int
    seq: int


def concatenation(udh: bytes) -> Concat | None:
    """The concatenation of a part, from its UDH (8- or 16-bit reference); None for a whole
    message, or a header that is malformed or names an impossible place (stored as is)."""
    if not udh:
        return None
    try:
        header = udh_codec.parse(udh)
    except ValueError:
        return None
    if header.reference is None or header.total < 2 or not 1 <= header.seq <= header.total:
        return None
    return Concat(header.reference, header.total, header.seq)


class ScheduledPublisher:
    """A `Publisher` writing to the durable schedule only (the scheduler publishes within
    ~0.1 s): for callers with nothing but a Redis client, such as the SMPP connector."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        schedule_at(self.redis, now_ms(), task, args, queue)

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        schedule_at(self.redis, now_ms() + int(delay * 1000), task, args, queue)


class MoIntake:
    """Takes inbound messages in (module doc); thread-safe, one per process."""

    def __init__(
        self,
        client: redis.Redis,
        router: ReceiptRouter,
        *,
        keywords: Keywords,
        reassembly_ms: int,
    ) -> None:
        self.redis = client
        self.router = router
        self.store = router.store.mo
        self.owners = Owners(client)
        self.optouts = OptOuts(client)
        self.keywords = keywords
        self.reassembly_ms = reassembly_ms

    @classmethod
    def build(
        cls, client: redis.Redis, publisher: Publisher, settings: Settings | None = None
    ) -> MoIntake:
        """An intake on `client` that rings drains through `publisher`."""
        settings = settings or get_settings()
        config = EngineConfig.from_settings(settings)
        router = ReceiptRouter(ReceiptStore(client), publisher, config)
        return cls(
            client,
            router,
            keywords=Keywords.from_settings(settings),
            reassembly_ms=settings.mo_reassembly_seconds * 1000,
        )

    def accept(
        self,
        carrier: str,
        sender: str,
        recipient: str,
        text: str,
        *,
        udh: bytes = b"",
        received_at: int,
        carrier_id: str = "",
        mo_id: str = "",
    ) -> str | None:
        """Take one MO (or one part of one); the stored MO's id, or None for a part whose
        message still waits for others (or a repeated part). `mo_id`: the id to store a whole
        MO under (a repeat of the call stores nothing new); a new one by default."""
        sender, recipient = canonical_number(sender), canonical_number(recipient)
        text = text[:MAX_TEXT_CHARS]
        concat = concatenation(udh)
        if concat is None:
            found, repeat = self._whole_id(carrier, carrier_id, mo_id, received_at)
            if repeat:
                metrics.MO_RECEIVED.labels(carrier, "duplicate").inc()
                return found or None
            # A failure, even a lost reply of this very store, leaves the carrier's id marked
            # with `found`: the carrier's retry stores the MO under it, unless it is stored.
            return self._store(found, carrier, sender, recipient, text, received_at,
                               carrier_id=carrier_id)  # fmt: skip
        if carrier_id and self.store.seen(carrier, carrier_id, "") is not None:
            metrics.MO_RECEIVED.labels(carrier, "duplicate").inc()
            return None  # a repeated part
        try:
            return self._part(carrier, sender, recipient, text, concat, received_at, carrier_id)
        except BaseException:
            if carrier_id:
                self.store.forget_seen(carrier, carrier_id)  # the carrier's retry may come
            raise

    def _whole_id(
        self, carrier: str, carrier_id: str, chosen: str, received_at: int
    ) -> tuple[str, bool]:
        """The id to store a whole MO under, and whether it is a repeat of one stored (then
        the id is that MO's, "" for a carrier's id seen as a part)."""
        mo_id = chosen or new_mo_id(received_at)
        if carrier_id:
            first = self.store.seen(carrier, carrier_id, mo_id)
            if first is None:
                return mo_id, False
            # Stored, or not by the call that marked it (its reply was lost, or it failed):
            # then it is stored now under that id. (Two deliveries at once may both store it:
            # the same id, the same record, one webhook.)
            return first, not first or self.store.exists(first)
        return mo_id, bool(chosen) and self.store.exists(chosen)

    def _part(
        self,
        carrier: str,
        sender: str,
        recipient: str,
        text: str,
        concat: Concat,
        received_at: int,
        carrier_id: str,
    ) -> str | None:
        key = mo_parts_key(carrier, sender, recipient, concat.reference, concat.total)
        args = [carrier, sender, recipient, concat.reference, concat.total]
        due = now_ms() + self.reassembly_ms
        flush = (schedule_entry(FLUSH_MO_PARTS, args, Queue.CARRIER_DLR.value), due)
        parts = self.store.add_part(
            key, concat.seq, concat.total, text, received_at, carrier_id, flush,
            self.reassembly_ms + PARTS_SLACK_MS,
        )  # fmt: skip
        if parts is None:
            metrics.MO_RECEIVED.labels(carrier, "part").inc()
            return None
        try:
            return self._whole(carrier, sender, recipient, parts, key)
        except BaseException:
            self.store.unclaim_parts(key)
            raise

    def flush(
        self, carrier: str, sender: str, recipient: str, reference: int, total: int
    ) -> str | None:
        """The wait for a multipart MO is over: store what came (None if it was complete and
        stored already)."""
        key = mo_parts_key(carrier, sender, recipient, reference, total)
        parts = self.store.take_parts(key, total)
        if parts is None or not parts.texts:
            return None
        log.info("mo incomplete after the wait", extra={"parts": total, "missing": parts.missing})
        return self._whole(carrier, sender, recipient, parts)

    def _whole(
        self, carrier: str, sender: str, recipient: str, parts: Parts, parts_key: str = ""
    ) -> str:
        received_at = parts.first_at or now_ms()
        return self._store(
            new_mo_id(received_at), carrier, sender, recipient, parts.text, received_at,
            carrier_id=parts.carrier_id, parts=parts.total,
            missing=",".join(str(seq) for seq in parts.missing), parts_key=parts_key,
        )  # fmt: skip

    def _store(
        self,
        mo_id: str,
        carrier: str,
        sender: str,
        recipient: str,
        text: str,
        received_at: int,
        *,
        carrier_id: str = "",
        parts: int = 1,
        missing: str = "",
        parts_key: str = "",
    ) -> str:
        owner = self.owners.resolve(recipient)
        keyword = self.keywords.match(text)
        record = MoRecord(
            id=mo_id, sender=sender, recipient=recipient, text=text, carrier=carrier,
            received_at=received_at, key_id=owner.key_id if owner else "",
            mo_url=owner.mo_url if owner else "", carrier_id=carrier_id,
            keyword=keyword.value if keyword else "", parts=parts, missing=missing,
            state="open" if owner and owner.mo_url else "",
        )  # fmt: skip
        outcome = "queued" if record.state else ("stored" if owner else "unowned")
        self.store.create(
            record,
            counter=f"mo_{outcome}",
            watch_at=now_ms() if record.state else None,
            parts_key=parts_key,
            also=None if keyword is None else lambda pipe: self._opt(pipe, keyword, owner, sender),
        )
        if owner is not None and record.state:
            try:
                self.router.route_mo(record.id, owner.mo_url, owner.key_id)
            except redis.RedisError as exc:  # stored and watched: the reconciler routes it
                log.warning("mo webhook not routed yet (%s)", type(exc).__name__,
                            extra={"mo_id": mo_id})  # fmt: skip
        metrics.MO_RECEIVED.labels(carrier, outcome).inc()
        log.info(
            "mo stored",
            extra={"mo_id": mo_id, "carrier": carrier, "outcome": outcome,
                   "keyword": record.keyword or None, "parts": parts},
        )  # fmt: skip
        return mo_id

    def _opt(
        self, pipe: redis.client.Pipeline, keyword: Keyword, owner: Owner | None, sender: str
    ) -> None:
        """Apply an opt-out or opt-in keyword to the owner's list (the deployment's without an
        owner), in the transaction that stores the MO: a STOP stored is a STOP applied."""
        listed = owner.key_id if owner else DEPLOYMENT
        if keyword is Keyword.OPTOUT:
            self.optouts.add(listed, sender, client=pipe)
        else:
            self.optouts.remove(listed, sender, client=pipe)
        change = "added" if keyword is Keyword.OPTOUT else "removed"
        metrics.OPTOUT_CHANGES.labels(change, "key" if owner else "deployment").inc()
