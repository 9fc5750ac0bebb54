"""What a chaos run counts, from the carrier's per-reference log and the client's receipt log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.chaos.parts import Arrival


@dataclass(frozen=True, slots=True)
class Sent:
    """One message a run submitted: its id, segment count and the receipt levels it asked for."""

    id: str
    segments: int
    levels: tuple[int, ...]

    def refs(self) -> list[str]:
        return [f"{self.id}:{seq}" for seq in range(1, self.segments + 1)]


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as the store has it at the end of a run."""

    status: str
    outcome: str  # the submission outcome (what a level-1 receipt reports)
    final_events: int  # how many times its history says it became final


@dataclass(frozen=True)
class ChaosResult:
    """The exact counts of one run."""

    scenario: str
    messages: int
    segments: int  # carrier submissions expected: one per segment
    submitted: int  # submissions the carrier took and sent (repeats included)
    unique: int  # distinct client references among them
    missing: int  # expected references the carrier never got
    absorbed: int  # resubmissions the carrier answered from its idempotency log (no SMS)
    receipts_expected: int
    receipts_received: int  # distinct (message, level) receipts the client took (2xx)
    receipt_repeats: int  # 2xx receipts beyond the first of each (same webhook-id)
    out_of_order: int  # messages whose receipts did not arrive with increasing seq
    not_final: int  # messages not in a final state at the end
    wrong: int  # final more than once, or a receipt saying other than the stored state
    seconds: float
    notes: Mapping[str, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        """SMS sent more than once: what "never send one twice" forbids."""
        return self.submitted - self.unique

    @property
    def lost(self) -> int:
        """Segments never sent, receipts never received, messages that never ended."""
        return self.missing + (self.receipts_expected - self.receipts_received) + self.not_final


def count(
    scenario: str,
    sent: Sequence[Sent],
    by_client_ref: Mapping[str, int],
    absorbed: int,
    arrivals: Sequence[Arrival],
    stored: Mapping[str, Stored],
    seconds: float,
    notes: Mapping[str, int],
) -> ChaosResult:
    expected_refs = {ref for message in sent for ref in message.refs()}
    expected_receipts = {(m.id, level) for m in sent for level in m.levels}
    taken = [a for a in arrivals if 200 <= a.answered < 300]
    per_receipt = Counter((a.message_id, a.level) for a in taken)
    return ChaosResult(
        scenario=scenario,
        messages=len(sent),
        segments=len(expected_refs),
        submitted=sum(by_client_ref.values()),
        unique=len(by_client_ref),
        missing=len(expected_refs - set(by_client_ref)),
        absorbed=absorbed,
        receipts_expected=len(expected_receipts),
        receipts_received=len(expected_receipts & set(per_receipt)),
        receipt_repeats=sum(per_receipt.values()) - len(per_receipt),
        out_of_order=out_of_order(taken),
        not_final=sum(1 for m in sent if stored[m.id].status not in FINAL),
        wrong=wrong(sent, taken, stored),
        seconds=seconds,
        notes=dict(notes),
    )


FINAL = frozenset({"delivered", "undelivered", "expired", "rejected", "failed", "cancelled"})


def wrong(sent: Sequence[Sent], taken: Sequence[Arrival], stored: Mapping[str, Stored]) -> int:
    """Messages that became final more than once, or whose receipts contradict the store."""
    bad = {m.id for m in sent if stored[m.id].final_events > 1}
    for arrival in taken:
        message = stored.get(arrival.message_id)
        if message is None:
            bad.add(arrival.message_id)  # a receipt for a message this run never sent
        elif arrival.status != (message.outcome if arrival.level == 1 else message.status):
            bad.add(arrival.message_id)
    return len(bad)


def out_of_order(taken: Sequence[Arrival]) -> int:
    """Messages whose first receipt of each level did not arrive in increasing `seq`."""
    firsts: dict[str, list[Arrival]] = {}
    seen: set[tuple[str, int]] = set()
    for arrival in taken:
        if (arrival.message_id, arrival.level) not in seen:
            seen.add((arrival.message_id, arrival.level))
            firsts.setdefault(arrival.message_id, []).append(arrival)
    return sum(
        1
        for receipts in firsts.values()
        if [r.seq for r in receipts] != sorted({r.seq for r in receipts})
        or [r.level for r in receipts] != sorted(r.level for r in receipts)
    )


COLUMNS = (
    ("scenario", 22), ("messages", 8), ("submitted", 9), ("unique", 7), ("duplicates", 10),
    ("absorbed", 8), ("receipts exp", 12), ("received", 8), ("repeats", 7), ("wrong", 5),
    ("lost", 5), ("seconds", 7),
)  # fmt: skip


def table(results: Sequence[ChaosResult]) -> str:
    """One line per run, then the notes (rare events the store counted) per run."""
    head = "  ".join(f"{name:>{width}}" for name, width in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in results:
        cells = (
            r.scenario, r.messages, r.submitted, r.unique, r.duplicates, r.absorbed,
            r.receipts_expected, r.receipts_received, r.receipt_repeats, r.wrong, r.lost,
            f"{r.seconds:.1f}",
        )  # fmt: skip
        lines.append("  ".join(f"{c!s:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    lines.append("")
    lines.append("submitted = SMS the carrier sent; absorbed = resubmissions it answered from its")
    lines.append("idempotency log (same client reference, no SMS); repeats = receipts the client")
    lines.append("took twice (same webhook-id); wrong = final twice, or a receipt contradicting")
    lines.append("the stored state. Notes (store counters, per scenario):")
    for r in results:
        notes = ", ".join(f"{k}={v}" for k, v in sorted(r.notes.items())) or "none"
        lines.append(f"  {r.scenario}: {notes}")
    return "\n".join(lines)
