"""`/sms/*` routes for single messages: send one, list the key's messages, read one, cancel one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from producer.body import json_body_openapi, parse_json_body, parse_model
from producer.listing import MAX_LIMIT, Filters, check_id, parse_statuses, parse_time
from producer.responses import JsonResponse
from producer.schemas import ERROR_RESPONSES, MessagePage, SendAccepted, SendRequest
from producer.services import JsonBody, ReadKey, SendKey, SendMessageKey, ServicesDep
from producer.validation import normalize_number
from worker.errors import ValidationError

router = APIRouter()

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.post(
    "/sms/send",
    status_code=202,
    response_model=SendAccepted,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_openapi(SendRequest),
)
def send(
    key: SendMessageKey,
    raw: JsonBody,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Accept one message: 202 with its id, encoding and segment count."""
    try:
        body = parse_model(SendRequest, parse_json_body(raw, services.settings.max_body_bytes))
        reply = services.desk.send(
            body,
            key.id,
            caller=key,
            idempotency=None if idempotency_key is None else (idempotency_key, raw),
        )
    except ValidationError:
        services.gate.admit(key)  # a refused call counts toward the key's rate (429 first)
        raise
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
