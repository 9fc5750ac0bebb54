"""What delivery attempts came to: each receipt's settlement (sent, retry, gone, dead), recorded
in one round trip for a group, and what it calls for next (a released level 2, a retry)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker import metrics
from worker.errors import WebhookError, WebhookGoneError
from worker.mo import webhook as mo_webhook
from worker.receipts.channels import Outgoing
from worker.receipts.retries import next_attempt_at
from worker.receipts.routing import ReceiptRouter
from worker.store.mo import MoClaim, MoSettlement
from worker.store.receipts import BatchEvent, Claim, ReceiptStore, Routing, Settlement

log = logging.getLogger(__name__)


class UnsignedReceiptError(WebhookError):
    """No signing secret: the receipt is never sent unsigned."""


@dataclass(slots=True)
class Attempt:
    """One request: one receipt, several (`dlr-batch`) to the same URL, a batch event, or an
    inbound message's webhook."""

    claims: list[Claim]
    outgoing: Outgoing
    key_id: str
    batch_id: str = ""  # a `dlr-batch` POST's webhook-id
    event: BatchEvent | None = None
    mo: MoClaim | None = None


@dataclass(slots=True)
class Outcome:
    """What one attempt came to."""

    attempt: Attempt
    status_code: int | None = None
    error: WebhookError | None = None
    ms: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Settled:
    """A group's bookkeeping: the settlements, and what to route again afterwards."""

    settlements: list[Settlement] = field(default_factory=list)
    retries: list[tuple[tuple[str, int], int]] = field(default_factory=list)  # (ref, due)
    routing: dict[str, Routing] = field(default_factory=dict)
    dead: int = 0
    events_sent: list[BatchEvent] = field(default_factory=list)
    mo: list[tuple[MoClaim, MoSettlement]] = field(default_factory=list)


def settle(outcomes: Sequence[Outcome], now: int) -> Settled:
    """What each outcome means for its receipts (and batch event)."""
    settled = Settled()
    for outcome in outcomes:
        event = outcome.attempt.event
        if event is not None and outcome.ok:
            settled.events_sent.append(event)
        mo = outcome.attempt.mo
        if mo is not None:
            unsigned = isinstance(outcome.error, UnsignedReceiptError)
            verdict = mo_webhook.settlement(
                mo, outcome.status_code, outcome.error, now, unsigned=unsigned
            )
            settled.mo.append((mo, verdict))
            metrics.MO_WEBHOOK_ATTEMPTS.labels(verdict.outcome).inc()
        for claim in outcome.attempt.claims:
            settled.routing[claim.message_id] = Routing(
                claim.dlr_url, claim.dlr_method, claim.dlr_batch, claim.key_id
            )
            settled.settlements.append(_settlement(claim, outcome, now, settled))
    return settled


def _settlement(claim: Claim, outcome: Outcome, now: int, settled: Settled) -> Settlement:
    event: dict[str, Any] = {
        "level": claim.level,
        "attempt": claim.attempt,
        "status_code": outcome.status_code,
        "ms": outcome.ms,
    }
    if outcome.attempt.batch_id:
        event["batch"] = outcome.attempt.batch_id
    error = outcome.error
    result, due, why = "sent", 0, ""
    if isinstance(error, WebhookGoneError):
        result = "gone"
    elif isinstance(error, UnsignedReceiptError):
        result, event["reason"] = "dead", "unsigned_refused"
    elif error is not None:
        why = str(error)[:200]
        next_at = next_attempt_at(claim, error, now)
        if next_at is None:
            result = "dead"
        else:
            result, due = "retry", next_at
            settled.retries.append(((claim.message_id, claim.level), due))
    if result == "dead":
        settled.dead += 1
    if why:
        event["why"] = why
    metrics.RECEIPT_ATTEMPTS.labels(result).inc()
    return Settlement(
        claim.message_id,
        claim.level,
        result,
        {"event": f"receipt_{result}", **event},
        due=due,
        why=why,
        clear_why=claim.attempt > 1,
    )


def record(
    store: ReceiptStore, router: ReceiptRouter, settled: Settled, clock: Callable[[], int]
) -> None:
    """Settle receipts, then route what that calls for: released level 2s now, retries when
    due (blocking I/O: runs off the loop)."""
    answers = store.settle(settled.settlements, clock())
    if log.isEnabledFor(logging.INFO):
        for s in settled.settlements:  # one line per attempt, ids only
            log.info(
                "receipt %s", s.outcome,
                extra={"message_id": s.message_id, "level": s.level,
                       "attempt": s.event.get("attempt"), "status_code": s.event.get("status_code"),
                       "ms": s.event.get("ms"), "why": s.why or None},
            )  # fmt: skip
    released = [
        (s.message_id, 2)
        for s, answer in zip(settled.settlements, answers, strict=True)
        if answer == 2
    ]
    router.route(released, routing=settled.routing)
    if settled.retries:
        refs, dues = zip(*settled.retries, strict=True)
        router.route(list(refs), routing=settled.routing, dues=list(dues))
    if settled.events_sent:
        store.batch_events_sent(settled.events_sent)
    if settled.mo:
        _record_mo(store, router, settled.mo, clock())
    if settled.dead:
        store.count("receipt_dead", settled.dead)




def _record_mo(
    store: ReceiptStore,
    router: ReceiptRouter,
    settled: list[tuple[MoClaim, MoSettlement]],
    now: int,
) -> None:
    """Settle MO webhooks, route their retries when due, count the dead."""
    answers = store.mo.settle([verdict for _, verdict in settled], now)
    for (claim, verdict), answer in zip(settled, answers, strict=True):
        log.info(
            "mo webhook %s", verdict.outcome,
            extra={"mo_id": verdict.mo_id, "attempt": claim.attempt,
                   "status_code": verdict.status_code, "why": verdict.why or None},
        )  # fmt: skip
        if verdict.outcome == "retry" and answer:
            router.route_mo(verdict.mo_id, claim.record.mo_url, claim.record.key_id, verdict.due)
    dead = sum(1 for _, verdict in settled if verdict.outcome == "dead")
    if dead:
        store.count("mo_webhook_dead", dead)
