"""`/healthz` (the process is up) and `/readyz` (Redis and the broker answer); no key needed."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter

from producer.responses import JsonResponse
from producer.services import ServicesDep
from worker.queueing import CeleryPublisher

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> Any:
    checks = {"redis": _ping(services.redis), "broker": _broker_ok(services.publisher)}
    ok = all(checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _broker_ok(publisher: CeleryPublisher) -> bool:
    try:
        with publisher.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:  # noqa: BLE001 - kombu raises transport-specific errors; readiness is yes/no
        return False
