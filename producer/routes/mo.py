"""Inbound (MO) messages: `/carriers/{name}/mo` takes them from carriers, `GET /mo` lists a
key's (docs/inbound.md).

`/carriers/{name}/mo` is checked as `/carriers/{name}/dlr` is (`producer.routes.carriers`):
the source's rate (429, the same budget as receipts), a configured carrier (404), the body
size (413), then its authentication (`CallbackAuth.check_mo`: the carrier's signature or its
MO token; 403 naming what is wrong). A request that does not fit its carrier's form
(`worker.mo.formats`) is 422. Only then is anything stored (`worker.mo.intake`): an MO
stored answers 200, with what its carrier expects (Kannel: an empty body, so smsbox sends no
reply; Twilio: an empty TwiML `<Response/>`; JSON carriers: the ids). Refusals are counted in
`smsq_carrier_mo_refused_total{carrier,reason}`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from producer.responses import JsonResponse
from producer.routes.carriers import REFUSALS, REFUSED, admit, read_inbound, refused
from producer.schemas import ERROR_RESPONSES
from producer.services import ReadKey, Services, ServicesDep
from worker import metrics
from worker.carriers.base import InboundRequest
from worker.clock import now_ms
from worker.errors import ValidationError
from worker.mo import formats
from worker.mo.intake import MoIntake
from worker.mo.owners import canonical_number
from worker.mo.webhook import payload
from worker.store.mo import MAX_PAGE, MoRecord

router = APIRouter()

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@router.get(
    "/carriers/{name}/mo",
    response_class=PlainTextResponse,
    operation_id="carrier_mo_get",
    responses=REFUSED,
)
@router.post(
    "/carriers/{name}/mo",
    response_class=PlainTextResponse,
    operation_id="carrier_mo_post",
    responses=REFUSED,
)
async def carrier_mo(name: str, request: Request) -> Response:
    """Check and store a carrier's inbound message(s); refused requests get 403, 404, 413,
    422 or 429 and change nothing (module doc)."""
    services: Services = request.app.state.services
    refusal = admit(services, request, name, counter=metrics.MO_REFUSED)
    if refusal is not None:
        return refusal
    inbound = await read_inbound(request, services.settings.max_body_bytes)
    auth = services.callback_auth
    verdict = auth.check_mo(name, inbound)
    if verdict.reason is not None:
        return refused(
            name, verdict.reason, 403, REFUSALS[verdict.reason], field=verdict.field,
            counter=metrics.MO_REFUSED,
        )  # fmt: skip
    carrier_type = auth.type_of(name)
    try:
        ids = await run_in_threadpool(_accept, services.mo_intake, name, carrier_type, inbound)
    except ValidationError as exc:
        return refused(
            name, "invalid", 422, exc.message, field=exc.field, counter=metrics.MO_REFUSED
        )
    if carrier_type == "twilio":
        return Response(EMPTY_TWIML, media_type="text/xml")
    if carrier_type == "kannel":
        return PlainTextResponse("")
    return JsonResponse({"ids": ids})


def _accept(
    intake: MoIntake, carrier: str, carrier_type: str, inbound: InboundRequest
) -> list[str | None]:
    """Parse the request (ValidationError: nothing stored) and store its MOs."""
    mos = formats.parse(carrier_type, inbound)
    at = now_ms()
    ids: list[str | None] = []
    for mo in mos:
        found = intake.accept(
            carrier, mo.sender, mo.recipient, mo.text,
            udh=mo.udh, received_at=at, carrier_id=mo.carrier_id,
        )  # fmt: skip
        ids.append(found)
    return ids


class MoDelivery(BaseModel):
    """Where an MO's webhook stands: `none` (no owner or no mo-url), `open` (due), `sending`,
    `sent`, `gone` (410) or `dead` (dead-lettered: `smsq mo replay`)."""

    state: str
    attempts: int


class MoItem(BaseModel):
    """One inbound message: its webhook's body, and its delivery."""

    type: str
    id: str
    from_: str = Field(alias="from")
    to: str
    text: str
    carrier: str
    received_at: str | None
    keyword: str | None
    parts: int
    missing_parts: list[int]
    delivery: MoDelivery


class MoPage(BaseModel):
    """`GET /mo`: a page of the key's inbound messages, newest first."""

    mo: list[MoItem]
    next_cursor: str | None


def _item(record: MoRecord) -> dict[str, Any]:
    state = record.state or "none"
    return {**payload(record), "delivery": {"state": state, "attempts": record.attempts}}


@router.get("/mo", response_model=MoPage, responses=ERROR_RESPONSES)
def list_mo(
    key: ReadKey,
    services: ServicesDep,
    to: Annotated[str | None, Query(description="Sent to this number of yours")] = None,
    since: Annotated[str | None, Query(description="Received at or after (ISO 8601 or ms)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the page before")] = None,
) -> Any:
    """The key's inbound messages, newest first; follow `next_cursor` until it is null."""
    if cursor is not None and not (len(cursor) == 32 and cursor.isalnum() and cursor.islower()):
        raise ValidationError("cursor is not one this API gave", field="cursor")
    records, next_cursor = services.mo_intake.store.page(
        key.id,
        to=canonical_number(to) if to else "",
        since=parse_since(since) if since else None,
        cursor=cursor,
        limit=limit,
    )
    return JsonResponse({"mo": [_item(r) for r in records], "next_cursor": next_cursor})


def parse_since(text: str) -> int:
    """Milliseconds of `since`: an ISO 8601 time (UTC without a zone) or epoch ms."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            "since must be an ISO 8601 time or epoch milliseconds", field="since",
            code="invalid_time",
        ) from None  # fmt: skip
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
