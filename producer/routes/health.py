"""`/healthz` (the process is up) and `/readyz` (Redis, the broker and a scheduler answer).

No key needed. The scheduler counts as reachable while one holds its lock: the leader refreshes
it on every poll and it lapses 10 s after the last scheduler stopped (`worker.scheduler`).
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from producer.responses import JsonResponse
from producer.services import ServicesDep
from worker.queueing import CeleryPublisher
from worker.store.keys import SCHEDULER_LOCK_KEY as LOCK_KEY

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no I/O)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Any:
    """200 when Redis, the broker and a scheduler answer; 503 naming what does not."""
    checks = await run_in_threadpool(readiness, services.redis, services.publisher)
    ok = all(checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


def readiness(client: redis.Redis, publisher: CeleryPublisher) -> dict[str, bool]:
    """Each dependency: does it answer?"""
    redis_ok = _ping(client)
    return {
        "redis": redis_ok,
        "broker": redis_ok if getattr(publisher, "direct", False) else _broker_ok(publisher),
        "scheduler": redis_ok and _scheduler_alive(client),
    }


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _scheduler_alive(client: redis.Redis) -> bool:
    try:
        return bool(client.exists(LOCK_KEY))
    except redis.RedisError:
        return False


def _broker_ok(publisher: CeleryPublisher) -> bool:
    try:
        with publisher.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:  # noqa: BLE001 - kombu raises transport-specific errors; readiness is yes/no
        return False
