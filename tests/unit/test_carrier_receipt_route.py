"""`/carriers/{name}/dlr`: a carrier receipt is kept in the inbox with its task (one
transaction), so a task lost between BRPOP and its delivery being recorded is queued again."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import cast

import orjson
import pytest
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.services import Services
from tests.unit.fake_services import fake_services
from worker.inbound import INBOX_KEY, INBOX_WATCH_KEY, done
from worker.settings import Settings


@pytest.fixture
def services() -> Services:
    return fake_services(Settings(max_body_bytes=4096), direct=True)


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as client:
        yield client


def test_a_carrier_receipt_is_kept_in_the_inbox_until_applied(
    api: TestClient, services: Services
) -> None:
    """The request is in the inbox and on the watch list, and its task names the entry."""
    reply = api.post("/carriers/sim/dlr", json={"id": "c-1", "status": "delivered"})
    assert reply.status_code == 200
    entries = cast(dict[str, str], services.redis.hgetall(INBOX_KEY))
    assert len(entries) == 1
    entry, kept = next(iter(entries.items()))
    carrier, request = orjson.loads(kept)
    assert carrier == "sim"
    assert orjson.loads(base64.b64decode(request["body"])) == {"id": "c-1", "status": "delivered"}
    assert services.redis.zscore(INBOX_WATCH_KEY, entry) is not None
    task = orjson.loads(cast(str, services.redis.lindex("carrier-dlr", 0)))
    assert orjson.loads(base64.b64decode(task["body"]))[0] == ["sim", request, entry]
    done(services.redis, entry)
    assert not services.redis.exists(INBOX_KEY, INBOX_WATCH_KEY)


def test_an_unknown_carrier_is_404_and_keeps_nothing(api: TestClient, services: Services) -> None:
    assert api.post("/carriers/nope/dlr", json={}).status_code == 404
    assert not services.redis.exists(INBOX_KEY, INBOX_WATCH_KEY, "carrier-dlr")
