"""`/carriers/{name}/dlr`: carrier receipts in, kept in the inbox and queued as received for the
carrier-dlr workers (`worker.inbound.accept_request`: a task lost in a crash is queued again)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from producer.errors import PayloadTooLargeError
from producer.services import Services
from worker.errors import NotFoundError
from worker.inbound import accept_request

router = APIRouter()


# One route per method: a two-method route gets one OpenAPI operation id twice (FastAPI warns,
# and /openapi.json fails where warnings are errors).
@router.get(
    "/carriers/{name}/dlr", response_class=PlainTextResponse, operation_id="carrier_dlr_get"
)
@router.post(
    "/carriers/{name}/dlr", response_class=PlainTextResponse, operation_id="carrier_dlr_post"
)
async def carrier_receipt(name: str, request: Request) -> Response:
    """Queue a carrier's receipt request; 200 at once so the carrier does not retry forever."""
    # Every carrier receipt comes through here: the services straight from the app and a
    # ready response skip FastAPI's dependency solving and its check of a returned value
    # (~10 % of this route's CPU in the app, #9).
    services: Services = request.app.state.services
    if name not in services.carrier_names:
        raise NotFoundError(f"no carrier named {name[:32]!r}")
    raw = await request.body()
    if len(raw) > services.settings.max_body_bytes:
        raise PayloadTooLargeError("body too large", code="too_large")
    content_type = request.headers.get("content-type", "")
    form = (
        dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        if content_type.startswith("application/x-www-form-urlencoded")
        else {}
    )
    queued = {
        "method": request.method,
        "url": str(request.url),
        "query": dict(request.query_params),
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": base64.b64encode(raw).decode(),
        "form": form,
    }
    await run_in_threadpool(accept_request, services.redis, services.publisher, name, queued)
    return PlainTextResponse("OK")
