"""`/sms/batch*` routes: campaigns in (in steps, off the event loop), live counters, cancel."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header
from starlette.concurrency import run_in_threadpool

from producer.batches import batch_status
from producer.body import json_body_openapi
from producer.responses import JsonResponse
from producer.schemas import ERROR_RESPONSES, BatchRequest
from producer.services import JsonBody, ReadKey, SendKey, ServicesDep

router = APIRouter()


@router.post(
    "/sms/batch",
    status_code=202,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_openapi(BatchRequest),
)
async def create_batch(
    key: SendKey,
    raw: JsonBody,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Accept a campaign: 202 with the batch id, the accepted count and each rejected recipient.

    The API's helper process does the work (`producer.batch_process`), or until it is up (or
    without one) the thread pool, a step at a time (parse; then 2,000 recipients per step),
    the loop getting control back between steps. Once started, a batch is accepted whole,
    even if the client goes away (as with a single send)."""
    with anyio.CancelScope(shield=True):
        if services.batches is not None and services.batches.ready():
            reply = await services.batches.accept(raw, key.id, key, idempotency_key)
        else:
            ingest = services.desk.accept_batch(
                raw, key.id, caller=key, idempotency=idempotency_key
            )
            while (step := await run_in_threadpool(ingest.step)) is None:
                pass
            reply = step
    return JsonResponse(reply, status_code=202)


@router.get("/sms/batch/{batch_id:id}", responses=ERROR_RESPONSES)
def get_batch(batch_id: str, key: ReadKey, services: ServicesDep) -> Any:
    """Live counters (queued, scheduled, submitted, delivered, failed, expired, cancelled…)."""
    return batch_status(services.store, batch_id, key.id)


@router.delete("/sms/batch/{batch_id:id}", responses=ERROR_RESPONSES)
def delete_batch(batch_id: str, key: SendKey, services: ServicesDep) -> Any:
    """Cancel what has not been submitted yet."""
    cancelled = services.desk.cancel_batch(batch_id, key.id)
    return {"id": batch_id, "cancelled": cancelled}
