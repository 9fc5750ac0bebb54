"""The per-process objects the API routes use, and the FastAPI dependencies that hand them out.

Key dependencies, one per kind of route (`producer.auth` says which scope is which): each
authenticates the bearer key (cached for seconds, `producer.gate`), checks its scope, then
admits the call: a revoked key is refused (401), and the call is taken from the key's rate
(429 with `Retry-After`). `POST /sms/send` leaves the admission to its own write (one round
trip for both; it calls these functions itself, being the hot path); `/otp/send` also takes
its message from the daily quota here, and gives it back when the call then fails with a
client error; a batch charges its recipients once parsed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

import redis
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from producer.auth import bearer_scheme, bearer_token, check_scope
from producer.batch_process import BatchProcess
from producer.desk import MessageDesk
from producer.errors import UnsupportedMediaTypeError
from producer.gate import Gate
from producer.idempotency import Idempotency
from producer.intake import Intake
from worker.carriers.config import load_carriers
from worker.celery_app import create_app as create_celery_app
from worker.errors import SmsqError
from worker.keys import ApiKey, KeyStore
from worker.queueing import CeleryPublisher, publishes_directly
from worker.quotas import Quotas
from worker.ratelimit import SourceLimiter
from worker.receipts.tokens import CallbackAuth
from worker.redis_urls import store_client
from worker.settings import Settings
from worker.store import Store
from worker.store.inbox import Inbox


@dataclass
class Services:
    """What the routes use; one set per API process."""

    settings: Settings
    redis: redis.Redis
    store: Store
    keys: KeyStore
    publisher: CeleryPublisher
    idempotency: Idempotency
    # Batches accepted in a helper process (an API built from settings); None: in threads.
    batches: BatchProcess | None = None
    quotas: Quotas = field(init=False)  # per-key limits, on the same Redis
    inbox: Inbox = field(init=False)  # carrier receipt requests kept until applied
    gate: Gate = field(init=False)  # key lookups (cached), admission, guarded writes
    desk: MessageDesk = field(init=False)  # send, batch, cancel, status, list
    intake: Intake = field(init=False)  # the thread that writes single sends in groups
    # /carriers/{name}/dlr: the configured carriers' checks, and the per-source rate limit.
    callback_auth: CallbackAuth = field(init=False)
    receipt_limiter: SourceLimiter | None = field(init=False)

    def __post_init__(self) -> None:
        self.quotas = Quotas(self.redis)
        self.inbox = Inbox(self.redis)
        self.gate = Gate(self.redis, self.keys, self.quotas)
        self.desk = MessageDesk(self.settings, self.store, self.publisher, self.gate)
        self.intake = Intake(self.desk)
        settings = self.settings
        self.callback_auth = CallbackAuth(
            load_carriers(settings),
            settings.secret_key.get_secret_value(),
            settings.effective_public_url,
        )
        rate, burst = settings.carrier_receipts_rate, settings.carrier_receipts_burst
        self.receipt_limiter = SourceLimiter(rate, burst) if rate else None


def build_services(settings: Settings) -> Services:
    client = store_client(
        settings,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        max_connections=256,
    )
    return Services(
        settings=settings,
        redis=client,
        store=Store(client),
        keys=KeyStore(client),
        publisher=CeleryPublisher(
            create_celery_app(settings), client, direct=publishes_directly(settings)
        ),
        idempotency=Idempotency(client),
        batches=BatchProcess(settings),
    )


async def get_services(request: Request) -> Services:
    # async: a plain lookup, not worth a hop to the thread pool
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]


async def json_body(request: Request) -> bytes:
    """The raw body of a JSON route (parsed later, off the loop); 415 for another content type.

    A body without a content type is read as JSON; form fields (what `curl -d` sends without
    `-H 'content-type: application/json'`) are not accepted."""
    content_type = request.headers.get("content-type", "")
    media = content_type.partition(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"the body must be JSON with content type application/json, not {media[:64]}"
        )
    return await request.body()


JsonBody = Annotated[bytes, Depends(json_body)]


async def caller(request: Request, services: Services) -> ApiKey:
    """The calling key: from this process's cache (no I/O), else looked up off the loop."""
    token = bearer_token(request)
    key = services.gate.cached(token)
    if key is None:
        key = await run_in_threadpool(services.gate.lookup, token)
    return key


def require(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency giving the caller's key once it passed auth, scope, revocation and rate."""

    async def key_dependency(
        request: Request, services: ServicesDep, _bearer: Bearer = None
    ) -> ApiKey:
        key = await caller(request, services)
        check_scope(key, scope)
        await run_in_threadpool(services.gate.admit, key)
        return key

    return key_dependency


def require_one_message(scope: str) -> Callable[..., AsyncIterator[ApiKey]]:
    """`require`, also taking one message from the daily quota (given back on a 4xx)."""

    async def key_dependency(
        request: Request, services: ServicesDep, _bearer: Bearer = None
    ) -> AsyncIterator[ApiKey]:
        key = await caller(request, services)
        check_scope(key, scope)
        charge = await run_in_threadpool(services.gate.admit, key, 1)
        try:
            yield key
        except SmsqError:
            # Refused input (4xx) sends nothing: give its message back to the daily quota.
            if charge.messages:
                await run_in_threadpool(services.gate.refund, charge)
            raise

    return key_dependency


SendKey = Annotated[ApiKey, Depends(require("send"))]  # DELETE /sms/*, POST /sms/batch
ReadKey = Annotated[ApiKey, Depends(require("read"))]  # GET /sms*
OtpKey = Annotated[ApiKey, Depends(require("otp"))]  # POST /otp/verify, GET /otp/{id}
OtpSendKey = Annotated[ApiKey, Depends(require_one_message("otp"))]  # POST /otp/send
