"""Direct enqueueing writes what Celery itself would write for the same task."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import redis

from worker.celery_app import create_app
from worker.envelope import enqueue
from worker.settings import Settings


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and value types, not the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


class TestEnvelope:
    def test_matches_the_message_celery_publishes(
        self, redis_client: redis.Redis, redis_url: str
    ) -> None:
        """Same keys, same types, same decoded body as `send_task` for the same task and queue."""
        create_app(Settings(redis_url=redis_url)).send_task("sms.send", args=["m1"], queue="bulk")
        enqueue(redis_client, "sms.send", ["m1"], "bulk")
        ours, celerys = (orjson.loads(raw) for raw in redis_client.lrange("bulk", 0, 1))
        celerys["properties"]["reply_to"] = ""  # Celery's is a random uuid; ours is empty
        assert shape(ours) | {"headers": None} == shape(celerys) | {"headers": None}
        assert set(ours["headers"]) == set(celerys["headers"])
        assert base64.b64decode(ours["body"]) == base64.b64decode(celerys["body"]).replace(
            b", ", b","
        ).replace(b": ", b":")
        assert ours["properties"]["delivery_info"] == celerys["properties"]["delivery_info"]
        assert ours["headers"]["task"] == celerys["headers"]["task"] == "sms.send"
