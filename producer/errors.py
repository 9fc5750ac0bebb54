"""JSON error replies `{"error": {"code", "message", "field"}}` for every failure."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from producer.auth import UnauthorizedError
from producer.responses import JsonResponse
from worker.errors import ConflictError, NotFoundError, RateLimitedError, ValidationError

log = logging.getLogger(__name__)


class BadRequestError(ValidationError):
    """Malformed request (400): bad JSON, wrong content type."""


class PayloadTooLargeError(ValidationError):
    """Body over the size limit (413)."""


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=headers,
    )


def field_name(loc: tuple[int | str, ...]) -> str | None:
    """`("body", "dlr-level")` → `dlr-level`; nested locations joined with dots."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""

    @app.exception_handler(BadRequestError)
    async def bad_request(_: Request, exc: BadRequestError) -> JsonResponse:
        return error_response(400, exc.code, exc.message, exc.field)

    @app.exception_handler(PayloadTooLargeError)
    async def too_large(_: Request, exc: PayloadTooLargeError) -> JsonResponse:
        return error_response(413, exc.code, exc.message, exc.field)

    @app.exception_handler(ValidationError)
    async def invalid(_: Request, exc: ValidationError) -> JsonResponse:
        return error_response(422, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JsonResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return error_response(
            422,
            "invalid",
            str(first.get("msg", "invalid request")),
            field_name(first.get("loc", ())),
        )

    @app.exception_handler(UnauthorizedError)
    async def unauthorized(_: Request, exc: UnauthorizedError) -> JsonResponse:
        return error_response(401, "unauthorized", str(exc), headers={"www-authenticate": "Bearer"})

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JsonResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    async def conflict(_: Request, exc: ConflictError) -> JsonResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(RateLimitedError)
    async def rate_limited(_: Request, exc: RateLimitedError) -> JsonResponse:
        retry_after = str(max(1, int(exc.retry_after + 0.999)))
        return error_response(429, "rate_limited", str(exc), headers={"retry-after": retry_after})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JsonResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
