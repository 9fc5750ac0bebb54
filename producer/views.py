"""What `GET /sms/{id}` shows: state, segments, receipts and the event history (UTC ms)."""

from __future__ import annotations

from typing import Any

from worker.clock import iso_ms, now_ms
from worker.contract import ReceiptState
from worker.receipts.endpoints import endpoint_for
from worker.store import Store
from worker.store.receipts import EndpointHealth, ReceiptRecord, read_health, receipt_field

OTP_MASK = "<otp code hidden>"


def _int(value: str | None) -> int | None:
    return int(value) if value else None


# The message fields a listing reads (`GET /sms`, one HMGET each); `message_summary` shows them.
SUMMARY_FIELDS = (
    "id", "status", "to", "from", "content", "otp", "encoding", "segments", "characters",
    "priority", "client_ref", "dlr", "dlr_level", "batch_id", "created_at", "send_at",
    "submitted_at", "done_at", "error_code", "error_message",
)  # fmt: skip


def message_summary(fields: dict[str, str]) -> dict[str, Any]:
    """A message as `GET /sms` lists it (and as `GET /sms/{id}` starts it)."""
    return {
        "id": fields["id"],
        "status": fields.get("status"),
        "to": fields.get("to"),
        "from": fields.get("from"),
        "content": OTP_MASK if fields.get("otp") == "1" else fields.get("content"),
        "encoding": fields.get("encoding"),
        "segments_total": int(fields.get("segments") or 0),
        "characters": _int(fields.get("characters")),
        "priority": fields.get("priority"),
        "client_ref": fields.get("client_ref") or None,
        "dlr": fields.get("dlr") == "1",
        "dlr_level": _int(fields.get("dlr_level")),
        "batch_id": fields.get("batch_id") or None,
        "created_at": iso_ms(_int(fields.get("created_at"))),
        "send_at": iso_ms(_int(fields.get("send_at"))),
        "submitted_at": iso_ms(_int(fields.get("submitted_at"))),
        "done_at": iso_ms(_int(fields.get("done_at"))),
        "error": (
            {"code": fields["error_code"], "message": fields.get("error_message", "")}
            if fields.get("error_code")
            else None
        ),
    }


def message_view(store: Store, fields: dict[str, str]) -> dict[str, Any]:
    total = int(fields.get("segments") or 0)
    segments = store.segments(fields["id"], total)
    events = [{**event, "at": iso_ms(int(event["at"]))} for event in store.events(fields["id"])]
    health = _endpoint_health(store, fields)
    receipts = {
        str(level): receipt_view(fields, level, health, receipt_history(events, level))
        for level in (1, 2)
        if fields.get(receipt_field(level, "state"))
    }
    return {
        **message_summary(fields),
        "segments": [
            {
                "seq": s.seq,
                "status": s.status,
                "carrier": s.carrier,
                "carrier_id": s.carrier_id,
                "error": {"code": s.error_code, "message": s.error_message}
                if s.error_code
                else None,
                "submitted_at": iso_ms(s.submitted_at),
                "done_at": iso_ms(s.done_at),
                "attempts": s.attempts,
            }
            for s in segments
        ],
        "receipts": receipts,
        "events": events,
    }


def receipt_view(
    fields: dict[str, str], level: int, health: EndpointHealth, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """One receipt level: where it stands, and while it waits, why."""
    receipt = ReceiptRecord.of(fields, level)
    view = {
        "state": str(receipt.state) if receipt.state else None,
        "attempts": receipt.attempts,
        "seq": receipt.seq,
        "next_attempt_at": iso_ms(receipt.not_before),
        "why": receipt.why,
        "waiting": None,
        "history": history,
    }
    if receipt.state is not None and not receipt.done:
        view["waiting"] = _waiting(receipt.state, receipt.why, receipt.not_before, health)
    return view


def _waiting(
    state: ReceiptState, why: str | None, not_before: int | None, health: EndpointHealth
) -> str:
    """Why a receipt that is not done waits, in a sentence."""
    now = now_ms()
    if state == ReceiptState.WAITING:
        return "waiting for the level-1 receipt of this message"
    if health.backoff_until > now:
        return (
            f"endpoint backing off until {iso_ms(health.backoff_until)}: {health.reason} "
            f"({health.failures} failures in a row)"
        )
    if state == ReceiptState.SENDING:
        return "being sent"
    if not_before and not_before > now:
        return f"next attempt at {iso_ms(not_before)}: {why or 'the last attempt failed'}"
    return "queued for its endpoint"


def _endpoint_health(store: Store, fields: dict[str, str]) -> EndpointHealth:
    if not fields.get("dlr_url"):
        return EndpointHealth()
    endpoint = endpoint_for(fields.get("key_id", ""), fields["dlr_url"])
    return read_health(store.redis, endpoint.id)


def receipt_history(events: list[dict[str, Any]], level: int) -> list[dict[str, Any]]:
    """Every delivery attempt of one receipt level, in order: when, what came of it (`sent`,
    `retry`, `gone`, `dead`), the HTTP status, what went wrong and how long it took; then
    replays."""
    return [
        {
            "attempt": event.get("attempt"),
            "at": event["at"],
            "result": event["event"].removeprefix("receipt_"),
            "status_code": event.get("status_code"),
            "error": event.get("why"),
            "ms": event.get("ms"),
        }
        for event in events
        if event["event"].startswith("receipt_") and event.get("level") == level
    ]
