"""What the connector learnt, stored: the SMSC's answers to submit_sm, receipts, MO messages.

Runs in the connector's threads, on the same store and receipt intake as the workers, in
batches (a few round trips for many answers):

- accepted: the SMSC's message id becomes the segment's carrier id (indexed for receipts;
  receipts that came before it, parked under it, are applied after the acceptance), and the
  segment `sent` → `accepted`, which finishes the submission (level 1) as Kannel's ack does;
- rejected (a permanent status) / failed (transient statuses, out of tries): the segment ends
  so, the SMPP status its error code;
- unknown (written, no answer): `unknown`, through the carrier id the worker indexed (parked
  if the worker has not stored it yet), as the reconciler's verdict for a silent SMSC;
- receipts: `ReceiptIntake.apply_all` under the carrier's name (unknown ids parked);
- MO: `worker.mo.accept`.

Only then are the stream entries acknowledged (and the deliver_sm answered): a crash before
leaves them to be done again, which changes nothing (segments never go backwards).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from worker import mo
from worker.carriers.base import CarrierReceipt
from worker.carriers.smpp import our_id
from worker.clock import now_ms
from worker.contract import SegmentStatus
from worker.inbound import ReceiptIntake
from worker.smpp.inbound import MobileOriginated
from worker.smpp.queue import Entry, SegmentQueue

AcceptMo = Callable[..., object]


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one entry: `accepted` (with `smsc_id`), `rejected`, `failed`, `unknown`."""

    entry: Entry
    status: SegmentStatus
    smsc_id: str = ""  # canonical (`worker.smpp.inbound.canonical_id`)
    error_code: str | None = None
    error_message: str | None = None


@dataclass(slots=True)
class Batch:
    """What to store in one go."""

    answers: list[Answer] = field(default_factory=list)
    receipts: list[CarrierReceipt] = field(default_factory=list)
    messages: list[MobileOriginated] = field(default_factory=list)

    def joined(self, later: Batch) -> Batch:
        """This batch, then `later`'s items."""
        return Batch(
            self.answers + later.answers,
            self.receipts + later.receipts,
            self.messages + later.messages,
        )


class Outcomes:
    """Stores one carrier's batches (blocking: the connector calls it from a thread)."""

    def __init__(
        self,
        carrier: str,
        queue: SegmentQueue,
        intake: ReceiptIntake,
        accept_mo: AcceptMo = mo.accept,
    ) -> None:
        self.carrier = carrier
        self.queue = queue
        self.intake = intake
        self.accept_mo = accept_mo

    def store(self, batch: Batch) -> None:
        """Store everything in `batch`, then acknowledge its entries."""
        self._answers(batch.answers)
        if batch.receipts:
            self.intake.apply_all(self.carrier, batch.receipts)
        for message in batch.messages:  # a batch stored again stores each MO once: its id
            self.accept_mo(
                self.intake.store.redis, self.carrier, message.sender, message.recipient,
                message.text, udh=message.udh, received_at=message.received_at or now_ms(),
                mo_id=message.mo_id,
            )  # fmt: skip
        self.queue.done([answer.entry for answer in batch.answers])

    def _answers(self, answers: Sequence[Answer]) -> None:
        accepted = [a for a in answers if a.status == SegmentStatus.ACCEPTED]
        links = [(*a.entry.segment, a.smsc_id) for a in accepted]
        parked = self.intake.store.link_carrier_ids(self.carrier, links) if links else []
        applied: list[tuple[str, int, dict[str, str | None]]] = []
        for answer, early in zip(accepted, parked, strict=True):
            message_id, seq = answer.entry.segment
            applied.append((message_id, seq, {"status": str(SegmentStatus.ACCEPTED)}))
            applied += [(message_id, seq, dict(receipt)) for receipt in early]
        ended = [a for a in answers if a.status in (SegmentStatus.REJECTED, SegmentStatus.FAILED)]
        applied += [(*a.entry.segment, _fields(a)) for a in ended]
        self.intake.apply_many(applied)
        unknown = [a for a in answers if a.status == SegmentStatus.UNKNOWN]
        if unknown:
            self.intake.apply_all(
                self.carrier,
                [
                    CarrierReceipt(
                        our_id(*a.entry.segment), SegmentStatus.UNKNOWN, a.error_code,
                        a.error_message,
                    )
                    for a in unknown
                ],
            )  # fmt: skip


def _fields(answer: Answer) -> dict[str, str | None]:
    return {
        "status": str(answer.status),
        "error_code": answer.error_code,
        "error_message": answer.error_message,
    }
