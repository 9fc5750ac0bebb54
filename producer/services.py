"""The per-process objects the API routes use, and the FastAPI dependencies that hand them out.

Key dependencies, one per kind of route (`producer.auth` says which scope is which): each
authenticates the bearer key, checks its scope, then takes the call (and the messages it will
send) from the key's rate and daily quota (`worker.quotas`): 401, 403, 429 with `Retry-After`.
A call that then fails with a client error gets its messages back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
import redis
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from producer.auth import authenticate, bearer_scheme, check_scope
from producer.idempotency import Idempotency
from worker.carriers.config import load_carriers
from worker.celery_app import create_app as create_celery_app
from worker.errors import SmsqError
from worker.keys import ApiKey, KeyStore
from worker.mo.intake import MoIntake
from worker.optouts import OptOuts
from worker.queueing import CeleryPublisher, publishes_directly
from worker.quotas import Charge, Quotas
from worker.ratelimit import SourceLimiter
from worker.receipts.tokens import CallbackAuth
from worker.redis_urls import store_client
from worker.settings import Settings
from worker.store import Store


@dataclass
class Services:
    """What the routes use; one set per API process."""

    settings: Settings
    redis: redis.Redis
    store: Store
    keys: KeyStore
    publisher: CeleryPublisher
    idempotency: Idempotency
    quotas: Quotas = field(init=False)  # per-key limits, on the same Redis
    # /carriers/{name}/dlr: the configured carriers' checks, and the per-source rate limit.
    callback_auth: CallbackAuth = field(init=False)
    receipt_limiter: SourceLimiter | None = field(init=False)
    # Inbound messages (/carriers/{name}/mo, GET /mo) and the opt-out check of sends.
    mo_intake: MoIntake = field(init=False)
    optouts: OptOuts = field(init=False)

    def __post_init__(self) -> None:
        self.quotas = Quotas(self.redis)
        self.mo_intake = MoIntake.build(self.redis, self.publisher, self.settings)
        self.optouts = OptOuts(self.redis)
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
    )


async def get_services(request: Request) -> Services:
    # async: a plain lookup, not worth a hop to the thread pool
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
# How many messages a call will send (what it costs against the daily quota).
Cost = Callable[[Request, Services], Awaitable[int]]


async def one_message(_request: Request, _services: Services) -> int:
    return 1


async def batch_size(request: Request, services: Services) -> int:
    """The recipients (or messages) a batch body lists; 0 for a body the route will refuse."""
    raw = await request.body()  # Starlette keeps it: the route reads it again for free
    if len(raw) > services.settings.max_batch_body_bytes:
        return 0
    try:
        data: Any = await run_in_threadpool(orjson.loads, raw)  # up to 64 MiB: off the loop
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(data, dict):
        return 0
    sizes = [len(v) for v in (data.get("messages"), data.get("recipients")) if isinstance(v, list)]
    return max(sizes, default=0)


def require(scope: str | None, cost: Cost | None = None) -> Callable[..., AsyncIterator[ApiKey]]:
    """A dependency yielding the caller's key once it passed auth, scope and limits."""

    async def key_dependency(
        request: Request, services: ServicesDep, _bearer: Bearer = None
    ) -> AsyncIterator[ApiKey]:
        key = await run_in_threadpool(authenticate, request, services.keys)
        if scope is not None:
            check_scope(key, scope)
        charge: Charge | None = None
        if key.limited:
            messages = await cost(request, services) if cost is not None and key.daily else 0
            charge = await run_in_threadpool(services.quotas.charge, key, messages)
        try:
            yield key
        except SmsqError:
            # Refused input (4xx) sends nothing: give its messages back to the daily quota.
            if charge is not None and charge.messages:
                await run_in_threadpool(services.quotas.refund, charge)
            raise

    return key_dependency


KeyDep = Annotated[ApiKey, Depends(require(None))]  # any valid key, rate-limited
SendKey = Annotated[ApiKey, Depends(require("send"))]  # DELETE /sms/*
SendMessageKey = Annotated[ApiKey, Depends(require("send", one_message))]  # POST /sms/send
SendBatchKey = Annotated[ApiKey, Depends(require("send", batch_size))]  # POST /sms/batch
ReadKey = Annotated[ApiKey, Depends(require("read"))]  # GET /sms/*
OtpKey = Annotated[ApiKey, Depends(require("otp"))]  # POST /otp/verify, GET /otp/{id}
OtpSendKey = Annotated[ApiKey, Depends(require("otp", one_message))]  # POST /otp/send
