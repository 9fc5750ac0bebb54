"""`/carriers/{name}/dlr`: carrier receipts in, checked, then kept in the inbox as received,
where a drain on the carrier-dlr workers applies them in batches (`worker.receipts.intake`).

Checked in this order before anything is stored; a refusal leaves nothing in Redis and is
counted in `smsq_carrier_receipts_refused_total{carrier,reason}`:

1. the source address's rate (`SMSQ_CARRIER_RECEIPTS_RATE`, per API process): 429 with
   `Retry-After`;
2. a carrier of this deployment (the single `SMSQ_CARRIER`, or one of `SMSQ_CARRIERS_FILE`):
   404 for any other name;
3. the body size (`SMSQ_MAX_BODY_BYTES`): 413;
4. its authentication (`worker.receipts.tokens.CallbackAuth`: the segment's token, or the
   carrier's signature): 403 naming what is wrong;
5. at most `SMSQ_CARRIER_RECEIPTS_MAX` receipts: 413.
"""

from __future__ import annotations

import base64
import math
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from producer.errors import PayloadTooLargeError, error_response
from producer.schemas import ErrorBody
from producer.services import Services
from worker import metrics
from worker.carriers.base import InboundRequest
from worker.carriers.responses import receipt_fields
from worker.errors import ValidationError
from worker.receipts import intake, tokens

router = APIRouter()

UNKNOWN_CARRIER = "-"  # the metric's carrier label for names not configured (bounded labels)
OFF_LOOP_BYTES = 65_536  # bodies larger than this are parsed in the thread pool
# Carriers whose requests may list several receipts (a JSON list); the others carry one.
LISTING_TYPES = frozenset({"sim", "http"})

REFUSALS = {
    tokens.MISSING_TOKEN: "receipt URL without its token (ref and token query parameters)",
    tokens.BAD_TOKEN: "the token does not match the segment reference",
    tokens.BAD_SIGNATURE: "the carrier's signature is missing or does not match",
    tokens.WRONG_SEGMENT: "the receipt names another segment than its token",
    tokens.NO_SERVER_KEY: "receipt tokens cannot be checked: no server key is configured",
}


# The refusals, documented in /openapi.json with the JSON error shape.
REFUSED: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (403, 404, 413, 429)
}


# One route per method: a two-method route gets one OpenAPI operation id twice (FastAPI warns,
# and /openapi.json fails where warnings are errors).
@router.get(
    "/carriers/{name}/dlr",
    response_class=PlainTextResponse,
    operation_id="carrier_dlr_get",
    responses=REFUSED,
)
@router.post(
    "/carriers/{name}/dlr",
    response_class=PlainTextResponse,
    operation_id="carrier_dlr_post",
    responses=REFUSED,
)
async def carrier_receipt(name: str, request: Request) -> Response:
    """Check and queue a carrier's receipt request; 200 at once so the carrier does not retry
    forever. Refused requests get 403, 404, 413 or 429 (module doc)."""
    # Every carrier receipt comes through here: the services straight from the app and a
    # ready response skip FastAPI's dependency solving and its check of a returned value
    # (~10 % of this route's CPU in the app).
    services: Services = request.app.state.services
    auth = services.callback_auth
    label = name if auth.is_configured(name) else UNKNOWN_CARRIER
    if services.receipt_limiter is not None:
        wait = services.receipt_limiter.wait(request.client.host if request.client else "")
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            return refused(
                label, "rate_limited", 429, "too many receipt requests from this address",
                headers={"retry-after": retry_after},
            )  # fmt: skip
    if label == UNKNOWN_CARRIER:
        return refused(label, "unknown_carrier", 404, f"no carrier named {name[:32]!r}")
    raw = await request.body()
    if len(raw) > services.settings.max_body_bytes:
        raise PayloadTooLargeError("body too large", code="too_large")
    content_type = request.headers.get("content-type", "")
    form = (
        dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        if content_type.startswith("application/x-www-form-urlencoded")
        else {}
    )
    inbound = InboundRequest(
        method=request.method,
        url=str(request.url),
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=raw,
        form=form,
    )
    verdict = auth.check(name, inbound)
    if verdict.reason is not None:
        return refused(name, verdict.reason, 403, REFUSALS[verdict.reason], field=verdict.field)
    limit = services.settings.carrier_receipts_max
    if auth.type_of(name) in LISTING_TYPES:
        if len(raw) > OFF_LOOP_BYTES:
            count = await run_in_threadpool(receipt_count, inbound)
        else:
            count = receipt_count(inbound)
        if count > limit:
            return refused(
                name, "too_many_receipts", 413,
                f"{count} receipts in one request, more than {limit}", field="body",
            )  # fmt: skip
    queued = {
        "method": inbound.method,
        "url": inbound.url,
        "query": inbound.query,
        "headers": inbound.headers,
        "body": base64.b64encode(raw).decode(),
        "form": form,
    }
    await run_in_threadpool(intake.accept, services.inbox, services.publisher, name, queued)
    return PlainTextResponse("OK")


def receipt_count(request: InboundRequest) -> int:
    """How many receipts a request lists (1 for one the parser will record as invalid)."""
    try:
        return len(receipt_fields(request))
    except ValidationError:
        return 1


def refused(
    carrier: str,
    reason: str,
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Count a refused request and answer it with the JSON error shape."""
    metrics.CARRIER_RECEIPTS_REFUSED.labels(carrier, reason).inc()
    code = {404: "not_found", 429: "rate_limited", 403: "forbidden"}.get(status, reason)
    return error_response(status, code, message, field, headers)
