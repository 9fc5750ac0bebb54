"""`/metrics` (Prometheus; no API key, optionally a bearer token of its own) and what the API
itself observes: logs, requests, OTP.

With `SMSQ_METRICS_TOKEN` set, `/metrics` answers only `Authorization: Bearer <that token>`
(compared in constant time) and 401 otherwise: the page shows carrier names and volumes.

`install(app)` is the API's operations wiring, called once the routes are in: the `/metrics`
route; JSON logs (`worker.logs`, uvicorn's lines too); a middleware counting requests by route
and status and OTP sends and checks by outcome (from the status and, for `/otp/verify`, the
answer's `status`); and the 403 / 429 answers of keyed routes in the OpenAPI document.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.auth import UnauthorizedError
from producer.services import ServicesDep
from worker import logs, metrics

router = APIRouter()

OTP_SEND_OUTCOMES = {202: "accepted", 429: "refused", 400: "invalid", 422: "invalid",
                     503: "unavailable"}  # fmt: skip
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics_endpoint(request: Request, services: ServicesDep) -> Response:
    """Prometheus text format: every process's counters plus queue and scheduler gauges."""
    token = services.settings.metrics_token.get_secret_value()
    if token and not has_token(request.headers.get("authorization", ""), token):
        raise UnauthorizedError("/metrics needs 'Authorization: Bearer <SMSQ_METRICS_TOKEN>'")
    body = await run_in_threadpool(metrics.exposition, services.redis)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def has_token(header: str, token: str) -> bool:
    """`Bearer <token>` in an Authorization header, compared in constant time."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


class RequestMetrics:
    """ASGI middleware: counts and times each request by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises
        keep_body = scope["path"] == "/otp/verify"
        body: list[bytes] = []

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif keep_body and message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            template = route.path_format if isinstance(route, APIRoute) else "unmatched"
            metrics.HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            metrics.HTTP_SECONDS.labels(template).observe(time.perf_counter() - started)
            count_otp(template, scope["method"], status, b"".join(body))


def count_otp(route: str, method: str, status: int, body: bytes) -> None:
    """OTP sends by outcome; OTP checks by the status they answered."""
    if method != "POST":
        return
    if route == "/otp/send" and status not in (401, 403):
        metrics.OTP_SENDS.labels(OTP_SEND_OUTCOMES.get(status, "error")).inc()
    elif route == "/otp/verify" and status == 200:
        try:
            answer: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(answer, dict) and isinstance(answer.get("status"), str):
            metrics.OTP_VERIFICATIONS.labels(answer["status"]).inc()


def hoist_defs(schema: dict[str, Any]) -> None:
    """Move `$defs` of request body schemas into `components/schemas`.

    Pydantic nests a body model's sub-models under the body schema's own `$defs`, but an
    OpenAPI `$ref` of `#/$defs/X` points at the document's root, where there is none; tools
    that follow it (schemathesis, client generators) cannot resolve it.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            body = operation.get("requestBody", {}) if isinstance(operation, dict) else {}
            for content in body.get("content", {}).values():
                for name, definition in content.get("schema", {}).pop("$defs", {}).items():
                    components.setdefault(name, _rebased(definition))
                if "schema" in content:
                    content["schema"] = _rebased(content["schema"])


def _rebased(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: v.replace("#/$defs/", "#/components/schemas/")
            if k == "$ref" and isinstance(v, str)
            else _rebased(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebased(v) for v in node]
    return node


def document_key_errors(schema: dict[str, Any]) -> None:
    """Add 403 (scope) and 429 (rate, quota) to every keyed operation."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("security"):
                answers = operation.setdefault("responses", {})
                answers.setdefault("403", {"description": "The key lacks the scope"})
                answers.setdefault("429", {"description": "Rate or quota exhausted"})
                for status in ("403", "429"):
                    answers[status].setdefault("content", ERROR_BODY)


def finish_openapi(app: FastAPI) -> None:
    """The OpenAPI document, completed once when first asked for (FastAPI's documented way
    to adapt it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            hoist_defs(schema)
            document_key_errors(schema)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Wire the API's metrics and logs (see the module doc); call after the routers."""
    logs.configure(app.state.services.settings.log_level, capture=UVICORN_LOGGERS)
    app.include_router(router)
    app.add_middleware(RequestMetrics)
    finish_openapi(app)
