"""The API's services on fakeredis, for unit tests of routes (one place to build them)."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
from celery import Celery
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.idempotency import Idempotency
from producer.services import Services
from worker.keys import KeyStore
from worker.queueing import CeleryPublisher
from worker.settings import Settings
from worker.store import Store


def fake_services(
    settings: Settings | None = None,
    *,
    client: fakeredis.FakeRedis | None = None,
    direct: bool = False,
    publisher: Callable[[fakeredis.FakeRedis], CeleryPublisher] | None = None,
) -> Services:
    """Services on `client` (a fresh fakeredis by default); tasks go to an in-memory Celery
    broker, or (`direct`) straight into the fake Redis's queue lists."""
    client = client or fakeredis.FakeRedis(decode_responses=True)
    return Services(
        settings=settings or Settings(),
        redis=client,
        store=Store(client),
        keys=KeyStore(client),
        publisher=(
            publisher(client)
            if publisher
            else CeleryPublisher(Celery("test", broker="memory://"), client, direct=direct)
        ),
        idempotency=Idempotency(client),
    )


def keyed_client(services: Services, api_key: str | None = None) -> TestClient:
    """A test client of the API on `services`, sending `api_key` (a new key by default)."""
    key = api_key or services.keys.create("unit").api_key
    return TestClient(create_app(services=services), headers={"authorization": f"Bearer {key}"})
