"""`/sms/*` routes for single messages: send one, list the key's messages, read one, cancel one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from producer.auth import check_scope
from producer.body import json_body_openapi
from producer.listing import MAX_LIMIT, Filters, check_id, parse_statuses, parse_time
from producer.responses import JsonResponse
from producer.schemas import ERROR_RESPONSES, MessagePage, SendAccepted, SendRequest
from producer.services import ReadKey, SendKey, Services, ServicesDep, caller, json_body
from producer.validation import normalize_number

router = APIRouter()

# `Idempotency-Key` and the bearer key, declared for the OpenAPI document only: the send route
# reads them itself (see `send`).
SEND_OPENAPI = {
    **json_body_openapi(SendRequest),
    "security": [{"HTTPBearer": []}],
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 255},
            "description": "The same key and body within 24 h replay the first answer",
        }
    ],
}


@router.post(
    "/sms/send",
    status_code=202,
    response_model=SendAccepted,
    responses=ERROR_RESPONSES,
    openapi_extra=SEND_OPENAPI,
)
async def send(request: Request) -> Response:
    """Accept one message: 202 with its id, encoding and segment count."""
    # The hot path, one call per message: what the other routes get from FastAPI dependencies
    # is done here by hand (the same functions), and all but reading the body happens in the
    # intake thread, several sends per round trip under load (`producer.intake`).
    services: Services = request.app.state.services
    key = await caller(request, services)
    check_scope(key, "send")
    raw = await json_body(request)
    reply = await services.intake.send(key, raw, request.headers.get("idempotency-key"))
    return JsonResponse(reply, status_code=202)


@router.get("/sms", response_model=MessagePage, responses=ERROR_RESPONSES)
def list_messages(
    key: ReadKey,
    services: ServicesDep,
    to: Annotated[str | None, Query(description="Recipient (E.164)")] = None,
    status: Annotated[str | None, Query(description="A status, or several: queued,failed")] = None,
    since: Annotated[str | None, Query(description="Created at or after (ISO 8601 or ms)")] = None,
    until: Annotated[str | None, Query(description="Created at or before (ISO 8601 or ms)")] = None,
    batch_id: Annotated[str | None, Query(description="Messages of this batch")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the page before")] = None,
) -> Any:
    """The key's messages, newest first; follow `next_cursor` until it is null."""
    filters = Filters(
        to=normalize_number(to) if to else None,
        statuses=parse_statuses(status) if status else frozenset(),
        since=parse_time(since, "since") if since else None,
        until=parse_time(until, "until") if until else None,
        batch_id=check_id(batch_id, "batch_id") if batch_id else None,
        limit=limit,
        cursor=check_id(cursor, "cursor") if cursor else None,
    )
    return JsonResponse(services.desk.list(key.id, filters))


@router.get("/sms/{message_id:id}", responses=ERROR_RESPONSES)
def status(message_id: str, key: ReadKey, services: ServicesDep) -> Any:
    """A message's state, segments, receipts and event history; 404 for other keys' messages."""
    return JsonResponse(services.desk.status(message_id, key.id))


@router.delete("/sms/{message_id:id}", responses=ERROR_RESPONSES)
def delete_message(message_id: str, key: SendKey, services: ServicesDep) -> Any:
    """Cancel a queued or scheduled message; 409 once it is being submitted or done."""
    return JsonResponse(services.desk.cancel(message_id, key.id))
