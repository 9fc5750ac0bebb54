"""`/sms/*` routes: send one message, read its status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from producer.body import json_body_openapi, parse_json_body, parse_model
from producer.responses import JsonResponse
from producer.schemas import ERROR_RESPONSES, SendAccepted, SendRequest
from producer.services import ReadKey, SendMessageKey, ServicesDep
from producer.submission import accept_messages
from producer.validation import build_message
from producer.views import message_view
from worker.errors import NotFoundError
from worker.geo import GeoPermissions

router = APIRouter()


@router.post(
    "/sms/send",
    status_code=202,
    response_model=SendAccepted,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body_openapi(SendRequest),
)
async def send(
    request: Request,
    key: SendMessageKey,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Accept one message: 202 with its id, encoding and segment count."""
    raw = await request.body()
    body = parse_model(SendRequest, parse_json_body(raw, services.settings.max_body_bytes))

    def accept() -> dict[str, Any]:
        geo = GeoPermissions.for_key(key.countries, services.settings)
        message, summary = build_message(body, services.settings, key_id=key.id, geo=geo)
        services.optouts.check(key.id, message.to)  # 422 `opted_out`: the number said STOP
        accept_messages(services.store, services.publisher, [message])
        return {
            "id": message.id,
            "status": str(message.status),
            "to": message.to,
            "encoding": summary.encoding,
            "segments": summary.segments,
            "characters": summary.characters,
        }

    reply = services.idempotency.run(key.id, idempotency_key, raw, accept)
    return JsonResponse(reply, status_code=202)


@router.get("/sms/{message_id}", responses=ERROR_RESPONSES)
def status(message_id: str, key: ReadKey, services: ServicesDep) -> Any:
    """A message's state, segments, receipts and event history; 404 for other keys' messages."""
    fields = services.store.fields(message_id) if message_id.isalnum() else {}
    if not fields or fields.get("key_id") != key.id:
        raise NotFoundError("no such message")
    return message_view(services.store, fields)
