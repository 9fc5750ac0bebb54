"""The system with real carriers around it: API, scheduler and worker processes configured by
environment (`SMSQ_CARRIER*`, `SMSQ_CARRIERS_FILE`), the carriers started by each test.

Built from `tests.integration.stack`'s pieces; unlike `running_stack` it runs no simulator of
its own and passes any extra `SMSQ_*` settings to the workers and the API (which accepts
receipts for the carriers configured so, checked with the same server key).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from producer.api import create_app
from tests.integration.stack import (
    HTTP_TIMEOUT,
    SECRET_KEY,
    run_scheduler,
    stop_process,
    wait_for,
    worker_process,
    worker_stats,
)
from tests.servers import serve_app
from worker.keys import KeyStore
from worker.settings import Settings


@dataclass
class CarrierStack:
    """Handles on a running system."""

    api_url: str
    redis: redis.Redis
    http: httpx.Client
    settings: Settings

    def send(self, body: dict[str, Any]) -> str:
        """POST /sms/send; the new message's id."""
        response = self.http.post(f"{self.api_url}/sms/send", json=body)
        assert response.status_code == 202, response.text
        message_id: str = response.json()["id"]
        return message_id

    def message(self, message_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.api_url}/sms/{message_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_all(
        self, message_ids: list[str], statuses: set[str], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll until every message is in one of `statuses`; return them, in order."""

        def done() -> list[dict[str, Any]] | None:
            found = [self.message(m) for m in message_ids]
            return found if all(m["status"] in statuses for m in found) else None

        try:
            result: list[dict[str, Any]] = wait_for(done, timeout, "not all there")
        except AssertionError:
            seen = sorted({self.message(m)["status"] for m in message_ids})
            raise AssertionError(f"messages never all reached {statuses}; seen {seen}") from None
        return result

    def tasks_per_worker(self, workers: int) -> dict[str, int]:
        """How many send tasks each of the `workers` worker processes ran (Celery remote
        control)."""
        stats = worker_stats(self.settings, workers)
        return {name: s.get("total", {}).get("sms.send", 0) for name, s in stats.items()}


@contextmanager
def carrier_stack(
    redis_url: str, env: dict[str, str], *, workers: int = 1, concurrency: int = 8
) -> Iterator[CarrierStack]:
    """Run the API, the scheduler and `workers` worker processes with `env` on top."""
    with ExitStack() as stack:
        common = {"SMSQ_SECRET_KEY": SECRET_KEY, **env}
        settings = Settings.model_validate(
            {name.removeprefix("SMSQ_").lower(): value for name, value in common.items()}
            | {"redis_url": redis_url, "dlr_allow_private": ["127.0.0.0/8"]}
        )
        api_url = stack.enter_context(serve_app(create_app(settings)))
        worker_env = {
            "SMSQ_REDIS_URL": redis_url,
            "SMSQ_PUBLIC_URL": api_url,
            "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_WORKER_CONCURRENCY": str(concurrency),
            **common,
        }
        for i in range(workers):
            process = worker_process(worker_env, concurrency=concurrency, name=f"cw{i}")
            stack.callback(stop_process, process)
        stack.enter_context(run_scheduler(redis_url, settings))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        stack.callback(client.close)
        key = KeyStore(client).create("carrier-tests")
        http = httpx.Client(
            headers={"authorization": f"Bearer {key.api_key}"}, timeout=HTTP_TIMEOUT
        )
        stack.callback(http.close)
        yield CarrierStack(api_url, client, http, settings)
