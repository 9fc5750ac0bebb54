"""`/sms/batch*` routes: campaigns in, live counters, cancel; and `DELETE /sms/{id}`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from producer.batches import (
    CANCELLABLE,
    batch_status,
    cancel_batch,
    claim_batch,
    expand,
    ingest,
    record_batch,
)
from producer.body import json_body_openapi, parse_json_body, parse_model
from producer.quiet_hours import QuietHours
from producer.responses import JsonResponse
from producer.schemas import ERROR_RESPONSES, BatchRequest
from producer.services import ReadKey, SendBatchKey, SendKey, ServicesDep
from producer.validation import check_receipt_url
from worker.contract import MessageStatus
from worker.errors import ConflictError, NotFoundError
from worker.geo import GeoPermissions

router = APIRouter()


@router.post(
    "/sms/batch",
    status_code=202,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_openapi(BatchRequest),
)
async def create_batch(
    request: Request,
    key: SendBatchKey,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Accept a campaign: 202 with the batch id, the accepted count and each rejected recipient."""
    raw = await request.body()
    body = parse_model(BatchRequest, parse_json_body(raw, services.settings.max_batch_body_bytes))

    def accept() -> dict[str, Any]:
        quiet = (
            QuietHours.parse(body.quiet_hours.start, body.quiet_hours.end)
            if body.quiet_hours
            else None
        )
        if body.dlr_url:  # one bad URL for the whole batch is one 422, not N rejections
            check_receipt_url(body.dlr_url, services.settings)
        callback_url = (
            check_receipt_url(body.batch_callback_url, services.settings, "batch_callback_url")
            if body.batch_callback_url
            else None
        )
        batch_id = claim_batch(services.store, body.batch_id, key.id, body.priority, callback_url)
        result = ingest(
            services.store,
            services.publisher,
            services.settings,
            expand(body),
            key_id=key.id,
            batch_id=batch_id,
            quiet=quiet,
            geo=GeoPermissions.for_key(key.countries, services.settings),
        )
        record_batch(services.store, result)
        return {
            "id": result.batch_id,
            "accepted": len(result.accepted),
            "rejected": result.rejected,
            "status": "scheduled" if body.send_at else "queued",
            "held_for_quiet_hours": result.held,
        }

    reply = services.idempotency.run(key.id, idempotency_key, raw, accept)
    return JsonResponse(reply, status_code=202)


@router.get("/sms/batch/{batch_id}", responses=ERROR_RESPONSES)
def get_batch(batch_id: str, key: ReadKey, services: ServicesDep) -> Any:
    """Live counters (queued, scheduled, submitted, delivered, failed, expired, cancelled…)."""
    return batch_status(services.store, batch_id, key.id)


@router.delete("/sms/batch/{batch_id}", responses=ERROR_RESPONSES)
def delete_batch(batch_id: str, key: SendKey, services: ServicesDep) -> Any:
    """Cancel what has not been submitted yet."""
    cancelled = cancel_batch(services.store, batch_id, key.id)
    return {"id": batch_id, "cancelled": cancelled}


@router.delete("/sms/{message_id}", responses=ERROR_RESPONSES)
def delete_message(message_id: str, key: SendKey, services: ServicesDep) -> Any:
    """Cancel a queued or scheduled message; 409 once it is being submitted or done."""
    fields = services.store.fields(message_id) if message_id.isalnum() else {}
    if not fields or fields.get("key_id") != key.id:
        raise NotFoundError("no such message")
    if not services.store.transition(message_id, CANCELLABLE, MessageStatus.CANCELLED):
        raise ConflictError(f"the message is {fields.get('status')} and can no longer be cancelled")
    return {"id": message_id, "status": MessageStatus.CANCELLED.value}
