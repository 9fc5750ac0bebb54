"""Shared fixtures: a private Redis for the session (or SMSQ_TEST_REDIS_URL), clean settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from httpx import URL
from hypothesis import settings as hypothesis_settings

from tests.lossy_proxy import LossyProxy
from worker.embedded_redis import EmbeddedRedis
from worker.settings import get_settings

# No per-example deadline: CI machines are 2 shared cores, and a slow example is not a bug.
hypothesis_settings.register_profile("smsq", deadline=None)
hypothesis_settings.load_profile("smsq")


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no SMSQ_* settings from the caller's environment."""
    for name in list(os.environ):
        if name.startswith("SMSQ_") and name != "SMSQ_TEST_REDIS_URL":
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def redis_server_url(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[str]:
    """A Redis for the whole session: SMSQ_TEST_REDIS_URL, else a private embedded server.
    Test processes (`./smsq test` runs two) each get their own: a server each, or on a given
    Redis a database each (`gw1` uses database 1)."""
    given = os.environ.get("SMSQ_TEST_REDIS_URL")
    if given:
        database = int(worker_id.removeprefix("gw")) if worker_id.startswith("gw") else 0
        yield str(URL(given).copy_with(path=f"/{database}")) if database else given
        return
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")), appendonly=False)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The session Redis, emptied before the test."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    return redis_server_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def lossy_proxy(redis_url: str) -> Iterator[LossyProxy]:
    """The test Redis behind a proxy that can lose one reply (tests/lossy_proxy.py)."""
    with LossyProxy(redis_url) as proxy:
        yield proxy
