"""An MO's webhook to its owner's `mo-url`, delivered by the receipt engine.

The webhook waits in its endpoint's queue (`worker.receipts`: the owner's key and the URL's
origin) as the member `m:{mo id}`, beside the key's receipts, and is delivered like one: the
same SSRF guard, deadline, per-endpoint and per-key concurrency, endpoint backoff, Standard
Webhooks signature with the key's secrets, retry schedule over 24 h (`worker.receipts.retries`)
and dead letters (`smsq mo replay`). Its body is fixed by the MO (the same on every attempt):

    {"type": "mo", "id", "from", "to", "text", "carrier", "received_at", "keyword",
     "parts", "missing_parts"}

`keyword` is `optout` or `optin` when the text changed the sender's opt-out state (else null);
`parts` counts a multipart MO's parts and `missing_parts` lists those that never came (empty
when whole). Its `webhook-id` is `evt_mo_{id}`, stable across attempts and replays.
"""

from __future__ import annotations

from typing import Any

from worker.clock import iso_ms
from worker.errors import WebhookError, WebhookGoneError
from worker.receipts.channels import Outgoing, channel_for
from worker.receipts.retries import next_attempt_at
from worker.store.mo import MoClaim, MoRecord, MoSettlement, MoStore

MEMBER_PREFIX = "m:"  # an MO webhook in an endpoint's queue (receipts: `{id}:{level}`)


def member(mo_id: str) -> str:
    return f"{MEMBER_PREFIX}{mo_id}"


def event_id(mo_id: str) -> str:
    """The webhook's `webhook-id`: stable across attempts, without dots."""
    return f"evt_mo_{mo_id}"


def payload(record: MoRecord) -> dict[str, Any]:
    """The webhook body (also what `GET /mo` lists, with the delivery state)."""
    return {
        "type": "mo",
        "id": record.id,
        "from": record.sender,
        "to": record.recipient,
        "text": record.text,
        "carrier": record.carrier,
        "received_at": iso_ms(record.received_at),
        "keyword": record.keyword or None,
        "parts": record.parts,
        "missing_parts": [int(seq) for seq in record.missing.split(",") if seq],
    }


def outgoing(claim: MoClaim) -> Outgoing:
    """The attempt's request: the body as JSON, POSTed to the owner's mo-url."""
    record = claim.record
    return channel_for("POST").encode(record.mo_url, [payload(record)], event_id(record.id))


def settlement(
    claim: MoClaim,
    status_code: int | None,
    error: WebhookError | None,
    now: int,
    *,
    unsigned: bool = False,
) -> MoSettlement:
    """What an attempt's outcome means: sent, gone (410), retry when due, or dead (out of
    attempts, or failing for 24 h; `unsigned`: the key is gone, never sent unsigned)."""
    mo_id = claim.record.id
    if error is None:
        return MoSettlement(mo_id, "sent", status_code=status_code)
    if isinstance(error, WebhookGoneError):
        return MoSettlement(mo_id, "gone", status_code=status_code)
    why = str(error)[:200]
    due = None if unsigned else next_attempt_at(claim, error, now)
    if due is None:
        return MoSettlement(mo_id, "dead", why=why, status_code=status_code)
    return MoSettlement(mo_id, "retry", due=due, why=why, status_code=status_code)


def due_again(store: MoStore, mo_id: str, now: int) -> tuple[MoRecord, int] | None:
    """An MO whose webhook must be routed again (the reconciler, `smsq mo replay`), and when
    it is due; None (and no longer watched) when it has nothing left to deliver."""
    record = store.load(mo_id)
    if record is None or record.state not in ("open", "sending") or not record.mo_url:
        store.unwatch(mo_id)
        return None
    return record, max(now, record.not_before)
