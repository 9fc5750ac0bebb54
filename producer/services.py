"""The per-process objects the API routes use, and the FastAPI dependencies that hand them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request

from producer.auth import authenticate
from producer.idempotency import Idempotency
from worker.celery_app import create_app as create_celery_app
from worker.keys import ApiKey, KeyStore
from worker.queueing import CeleryPublisher, publishes_directly
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


def build_services(settings: Settings) -> Services:
    client = redis.Redis.from_url(
        settings.effective_redis_url,
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


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def current_key(request: Request, services: ServicesDep) -> ApiKey:
    return authenticate(request, services.keys)


KeyDep = Annotated[ApiKey, Depends(current_key)]
