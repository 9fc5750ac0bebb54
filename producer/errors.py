"""JSON error replies `{"error": {"code", "message", "field"}}` for every failure, the request
body size limit that answers 413 before an oversized body is read, and the shape of paths:
a wrong method on a known path is 405 naming the right one (with `Allow`), and a trailing
slash is ignored (`POST /sms/send/` is `POST /sms/send`: no redirect)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.auth import ForbiddenError, UnauthorizedError
from producer.responses import JsonResponse
from producer.routes import allowed_methods
from worker.errors import ConflictError, NotFoundError, RateLimitedError, ValidationError
from worker.quotas import RevokedKeyError

log = logging.getLogger(__name__)


class BadRequestError(ValidationError):
    """Malformed request (400): bad JSON, wrong content type."""


class PayloadTooLargeError(ValidationError):
    """Body over the size limit (413)."""


class UnsupportedMediaTypeError(ValidationError):
    """A body that is not JSON by its content type (415)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="content-type", code="unsupported_media_type")


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


# The one route that takes large bodies (campaigns); every other body is `max_body_bytes`.
LARGE_BODY_PATHS = frozenset({"/sms/batch"})


class BodySizeLimit:
    """ASGI middleware: 413 for a body over the limit, decided from `Content-Length` before
    the app runs, or (chunked bodies) as soon as the bytes received pass it, so an oversized
    body is never read whole into memory."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.services.settings
        large = scope["path"] in LARGE_BODY_PATHS
        limit: int = settings.max_batch_body_bytes if large else settings.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = _too_large(limit)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(f"body larger than {limit} bytes", code="too_large")
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> JsonResponse:
    return error_response(413, "too_large", f"body larger than {limit} bytes")


# Errors whose reply is their status, a code and their own text.
PLAIN_ERRORS: tuple[tuple[type[Exception], int, str, dict[str, str] | None], ...] = (
    (UnauthorizedError, 401, "unauthorized", {"www-authenticate": "Bearer"}),
    (RevokedKeyError, 401, "unauthorized", {"www-authenticate": "Bearer"}),
    (ForbiddenError, 403, "forbidden", None),
    (NotFoundError, 404, "not_found", None),
    (ConflictError, 409, "conflict", None),
)


# Redis (or the broker) did not answer: a write may or may not have been applied, and smsq's
# clients never replay one (worker.redis_urls). The caller may repeat the call: with the same
# Idempotency-Key a send that was stored answers as the first time and queues nothing new.
UNAVAILABLE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)
UNAVAILABLE_MESSAGE = (
    "the store did not answer; the request may or may not have been applied: repeat it (with "
    "the same Idempotency-Key for a send)"
)


Handler = Callable[[Request, Exception], Awaitable[JsonResponse]]


async def _unavailable(_: Request, exc: Exception) -> JsonResponse:
    log.warning("store unavailable: %s", type(exc).__name__)
    return error_response(503, "unavailable", UNAVAILABLE_MESSAGE, headers={"retry-after": "1"})


def _plain(status: int, code: str, headers: dict[str, str] | None) -> Handler:
    async def handler(_: Request, exc: Exception) -> JsonResponse:
        return error_response(status, code, str(exc), headers=headers)

    return handler


def _table_handlers() -> list[tuple[type[Exception], Handler]]:
    """The handlers of `PLAIN_ERRORS` and of `UNAVAILABLE_ERRORS`."""
    plain = [(error, _plain(status, code, extra)) for error, status, code, extra in PLAIN_ERRORS]
    return plain + [(error, _unavailable) for error in UNAVAILABLE_ERRORS]


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""
    app.add_middleware(BodySizeLimit)
    app.add_middleware(TrailingSlash)
    app.router.redirect_slashes = False
    for error, handler in _table_handlers():
        app.add_exception_handler(error, handler)

    @app.exception_handler(BadRequestError)
    async def bad_request(_: Request, exc: BadRequestError) -> JsonResponse:
        return error_response(400, exc.code, exc.message, exc.field)

    @app.exception_handler(PayloadTooLargeError)
    async def too_large(_: Request, exc: PayloadTooLargeError) -> JsonResponse:
        return error_response(413, exc.code, exc.message, exc.field)

    @app.exception_handler(UnsupportedMediaTypeError)
    async def not_json(_: Request, exc: UnsupportedMediaTypeError) -> JsonResponse:
        return error_response(415, exc.code, exc.message, exc.field)

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

    @app.exception_handler(RateLimitedError)
    async def rate_limited(_: Request, exc: RateLimitedError) -> JsonResponse:
        retry_after = str(max(1, int(exc.retry_after + 0.999)))
        return error_response(429, exc.code, str(exc), headers={"retry-after": retry_after})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        if exc.status_code == 405:
            return wrong_method(request, dict(exc.headers or {}))
        code = {404: "not_found"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def wrong_method(request: Request, headers: dict[str, str]) -> JsonResponse:
    """405 naming every method the path takes, in the message and in `Allow` (Starlette's own
    `Allow` names the first matching route's only)."""
    path = request.scope["path"]
    allowed = allowed_methods(request.app.routes, path) or headers.get("Allow", "").split(", ")
    named = [m for m in allowed if m != "HEAD"]
    message = f"{request.method} is not allowed on {path}: use {' or '.join(named)}"
    return error_response(
        405, "method_not_allowed", message, headers={**headers, "Allow": ", ".join(allowed)}
    )


class TrailingSlash:
    """ASGI middleware: `/sms/send/` is `/sms/send` (no redirect a POST would not follow)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
        await self.app(scope, receive, send)
