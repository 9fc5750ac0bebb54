"""A receipt's body (docs/receipts.md), from its claim: the snapshot fixed when it opened, the
message's own fields, and the attempt."""

from __future__ import annotations

from typing import Any

from worker.clock import iso_ms
from worker.contract import MESSAGE_STATUS_WORDS, MessageStatus
from worker.store.receipts import Claim


def event_id(message_id: str, level: int) -> str:
    """The receipt's `webhook-id`: stable across attempts, without dots (Standard Webhooks)."""
    return f"evt_{message_id}_{level}"


def status_word(status: str) -> str:
    """The SMPP / Jasmin-style word for a status (`DELIVRD`, `ESME_ROK`…)."""
    try:
        return MESSAGE_STATUS_WORDS.get(MessageStatus(status), "UNKNOWN")
    except ValueError:
        return "UNKNOWN"


def build_payload(claim: Claim) -> dict[str, Any]:
    """The receipt body; everything but `attempt` is the same on every attempt and replay."""
    snap = claim.snapshot
    status = str(snap.get("status", ""))
    return {
        "id": claim.message_id,
        "level": claim.level,
        "status": status,
        "message_status": status_word(status),
        "to": claim.to,
        "from": claim.sender,
        "client_ref": claim.client_ref or None,
        "segments": snap.get("segments"),
        "carrier": snap.get("carrier"),
        "error": snap.get("error"),
        "submitted_at": _iso(snap.get("submitted_at")),
        "done_at": _iso(snap.get("done_at")),
        "event_id": event_id(claim.message_id, claim.level),
        "seq": claim.seq,
        "attempt": claim.attempt,
    }


def _iso(ms: object) -> str | None:
    return iso_ms(int(str(ms))) if ms else None
