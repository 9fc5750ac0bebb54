"""What the tests of lost Redis replies share (test_lost_replies.py,
test_lost_replies_inbound.py): an API on the given services, reading queues, loading scripts,
the API's answer. The proxy itself is `tests/lossy_proxy.py` (fixture `lossy_proxy`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import orjson
import redis
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.services import Services
from worker.store import lua_scripts

SEND = {"to": "+14155552671", "from": "smsq", "content": "Your code is 123456"}


@contextmanager
def api(services: Services) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A client of the API on `services` (all closed after), and a key's headers for a send."""
    try:
        key = services.keys.create("lost-replies").api_key
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            yield client, {"authorization": f"Bearer {key}", "idempotency-key": "order-1"}
    finally:
        services.publisher.app.close()
        services.redis.close()


def tasks(client: redis.Redis, queue: str) -> list[str]:
    """The task names waiting in a Celery queue list."""
    return [orjson.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]


def loaded(client: redis.Redis, script: str) -> None:
    """Load a store script, so that its EVALSHA runs (a NOSCRIPT answer would run nothing)."""
    client.script_load(lua_scripts.source(script))


class Reply(Protocol):
    """What the checks read of a test client's response."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self) -> Any: ...


def assert_unavailable(reply: Reply) -> None:
    """The API's answer to a lost reply: 503, the JSON error shape, try again soon."""
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "unavailable"
    assert reply.headers["retry-after"] == "1"
