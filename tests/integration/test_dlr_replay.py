"""`smsq dlr replay` on a real Redis: by message id, and by the time receipts were dead-lettered."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from typer.testing import CliRunner

from producer import cli
from tests.receipt_steps import claim, settle
from worker.clock import iso_ms, now_ms
from worker.store import DEAD_LETTER_KEY, Message, Store, new_message_id

pytestmark = pytest.mark.integration


def dead_receipt(store: Store, died_at: int) -> str:
    """A message whose level-1 receipt was given up and dead-lettered at `died_at`."""
    message = Message(
        id=new_message_id(), to="+14155552671", sender="smsq", content="hi", segments=1,
        dlr=True, dlr_level=1, dlr_url="https://client.test/r",
    )  # fmt: skip
    store.create(message)
    store.open_receipt(message.id, 1)
    claim(store, message.id, 1)
    settle(store, message.id, 1, "dead")
    store.redis.zadd(DEAD_LETTER_KEY, {f"{message.id}:1": died_at})
    return message.id


def queued(client: redis.Redis) -> list[list[object]]:
    """The args of the receipt tasks waiting in the `dlr` queue."""
    tasks = [json.loads(raw) for raw in client.lrange("dlr", 0, -1)]
    return [json.loads(base64.b64decode(task["body"]))[0] for task in tasks]


class TestReplayCommand:
    def test_replays_by_time_range_and_by_id(
        self, redis_client: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Only receipts that died in the range are queued again; ids name any message."""
        monkeypatch.setenv("SMSQ_REDIS_URL", redis_url)
        store = Store(redis_client)
        hour = 3600 * 1000
        old = dead_receipt(store, now_ms() - 3 * hour)
        recent = dead_receipt(store, now_ms() - hour // 2)
        runner = CliRunner()
        since = iso_ms(now_ms() - hour)
        result = runner.invoke(cli.app, ["dlr", "replay", "--since", since or ""])
        assert result.exit_code == 0, result.output
        assert "replaying 1 receipt(s)" in result.output
        assert queued(redis_client) == [[recent, 1]]
        assert store.fields(recent)["rcpt:1:state"] == "open"
        by_id = runner.invoke(cli.app, ["dlr", "replay", old])
        assert "replaying 1 receipt(s)" in by_id.output
        assert redis_client.zrange(DEAD_LETTER_KEY, 0, -1) == []

    def test_needs_ids_or_a_range(self) -> None:
        """Without ids or a time range it refuses (exit 2) instead of replaying everything."""
        result = CliRunner().invoke(cli.app, ["dlr", "replay"])
        assert result.exit_code == 2
