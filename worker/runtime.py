"""Per-process resources of a worker: settings, Redis, store, carrier, receipt router, publisher.

Built lazily on first use inside the process that uses them (never at import, and again after
a fork), one of each per process: one `httpx.Client` for carriers with explicit timeouts, which
keeps a small keep-alive pool per worker thread (`worker.http_clients`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from worker.carriers.base import Carrier
from worker.carriers.registry import build_carrier
from worker.celery_app import create_app
from worker.http_clients import PerThreadClient
from worker.keys import KeyStore
from worker.metrics import measured
from worker.queueing import CeleryPublisher, publishes_directly
from worker.receipts.client import ReceiptClient
from worker.receipts.config import EngineConfig
from worker.receipts.engine import ReceiptEngine
from worker.receipts.routing import ReceiptRouter
from worker.redis_urls import connect_blocking
from worker.settings import Settings, get_settings
from worker.ssrf import parse_denied, parse_networks
from worker.store import Store
from worker.store.receipts import ReceiptStore


@dataclass
class Runtime:
    """Everything a task needs, shared by the threads of one worker process."""

    settings: Settings
    redis: redis.Redis
    store: Store
    keys: KeyStore
    carrier: Carrier
    publisher: CeleryPublisher
    receipts: ReceiptStore
    router: ReceiptRouter
    http: httpx.Client
    # Parts built from the above once per process by `worker.tasks` (name -> part).
    parts: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.http.close()
        self.redis.close()


def redis_client(
    settings: Settings, max_connections: int | None = None, *, decode_responses: bool = True
) -> redis.Redis:
    """A Redis client whose pool waits for a free connection instead of failing (redis-py 8)."""
    return connect_blocking(
        settings.effective_redis_url,
        sentinel_service=settings.redis_sentinel_service,
        max_connections=max_connections or max(64, settings.worker_concurrency * 2),
        timeout=20,
        decode_responses=decode_responses,
        socket_timeout=30,
        socket_connect_timeout=5,
        health_check_interval=25,
    )


def build_runtime(settings: Settings) -> Runtime:
    client = redis_client(settings)
    timeout = httpx.Timeout(
        connect=settings.carrier_connect_timeout,
        read=settings.carrier_read_timeout,
        write=settings.carrier_read_timeout,
        pool=settings.carrier_read_timeout,
    )
    # One small keep-alive pool per worker thread (worker.http_clients): no shared pool to scan.
    http = PerThreadClient(timeout=timeout)
    publisher = CeleryPublisher(create_app(settings), client, direct=publishes_directly(settings))
    receipts = ReceiptStore(client)
    return Runtime(
        settings=settings,
        redis=client,
        store=Store(client),
        keys=KeyStore(client),
        carrier=measured(build_carrier(settings, http, client)),  # worker.metrics
        publisher=publisher,
        receipts=receipts,
        router=ReceiptRouter(receipts, publisher, EngineConfig.from_settings(settings)),
        http=http,
    )


def build_receipt_engine(rt: Runtime) -> ReceiptEngine:
    """The receipt engine of a `dlr` worker process, started (`worker.receipts.engine`)."""
    config = EngineConfig.from_settings(rt.settings)
    client = ReceiptClient(
        allow_private=parse_networks(rt.settings.dlr_allow_private),
        deny=parse_denied(rt.settings.dlr_deny),
        deadline=config.deadline,
        connect_timeout=config.connect_timeout,
        pool_size=config.endpoint_concurrency,
    )
    engine = ReceiptEngine(rt.receipts, rt.keys, rt.router, client, config)
    engine.start()
    return engine


_lock = threading.Lock()
_runtime: Runtime | None = None
_pid: int | None = None


def runtime() -> Runtime:
    """This process's runtime, built on first use (and rebuilt in a forked child)."""
    global _runtime, _pid
    with _lock:
        if _runtime is None or _pid != os.getpid():
            _runtime = build_runtime(get_settings())
            _pid = os.getpid()
        return _runtime
