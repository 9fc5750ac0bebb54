"""`/otp/*` routes: send a code, check it, read where it stands (never the code)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from producer.body import json_body_openapi, parse_json_body, parse_model
from producer.errors import error_response
from producer.otp import OtpDesk, OtpSendRequest, OtpVerifyRequest, verdict_json
from producer.responses import JsonResponse
from producer.schemas import ERROR_RESPONSES
from producer.services import JsonBody, OtpKey, OtpSendKey, Services, ServicesDep
from worker.otp.codes import OtpUnavailableError

router = APIRouter()

OTP_RESPONSES = {**ERROR_RESPONSES, 503: ERROR_RESPONSES[422]}


def desk(request: Request, services: Services) -> OtpDesk:
    """The app's OTP desk, built on first use from its services."""
    found: OtpDesk | None = getattr(request.app.state, "otp_desk", None)
    if found is None:
        found = OtpDesk(services.settings, services.redis, services.store, services.publisher)
        request.app.state.otp_desk = found
    return found


def unavailable(exc: OtpUnavailableError) -> JsonResponse:
    return error_response(503, "otp_unavailable", str(exc))


@router.post(
    "/otp/send",
    status_code=202,
    responses=OTP_RESPONSES,
    openapi_extra=json_body_openapi(OtpSendRequest),
)
def send(request: Request, key: OtpSendKey, raw: JsonBody, services: ServicesDep) -> Any:
    """Send a code by SMS on the otp lane: 202 with the challenge id and its expiry."""
    body = parse_model(OtpSendRequest, parse_json_body(raw, services.settings.max_body_bytes))
    try:
        sent = desk(request, services).send(body, key.id, key.countries)
    except OtpUnavailableError as exc:
        return unavailable(exc)
    return JsonResponse(sent.as_json(), status_code=202)


@router.post(
    "/otp/verify", responses=OTP_RESPONSES, openapi_extra=json_body_openapi(OtpVerifyRequest)
)
def verify(request: Request, key: OtpKey, raw: JsonBody, services: ServicesDep) -> Any:
    """Check a code: `valid`, `status` and the checks left (single use, at most 5 checks)."""
    body = parse_model(OtpVerifyRequest, parse_json_body(raw, services.settings.max_body_bytes))
    try:
        verdict = desk(request, services).verify(body, key.id)
    except OtpUnavailableError as exc:
        return unavailable(exc)
    return JsonResponse(verdict_json(verdict))


@router.get("/otp/{challenge_id:id}", responses=OTP_RESPONSES)
def status(challenge_id: str, request: Request, key: OtpKey, services: ServicesDep) -> Any:
    """Where a code stands: queued, sent, delivered, approved, expired… (never the code)."""
    return desk(request, services).status(challenge_id, key.id)
