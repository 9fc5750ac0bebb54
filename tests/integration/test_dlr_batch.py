"""`dlr-batch` end to end: real Redis, Celery worker, scheduler, carrier simulator and receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.stack import Stack, running_stack, wait_for
from tests.receiver import Received

pytestmark = pytest.mark.integration

MESSAGES = 200
PATH = "/batched"


@pytest.fixture(scope="module")
def stack(redis_server_url: str) -> Iterator[Stack]:
    with running_stack(redis_server_url) as running:
        yield running


def batched_posts(stack: Stack) -> list[Received]:
    return [r for r in stack.receiver.snapshot() if r.path == PATH]


def receipts_in(posts: list[Received]) -> list[tuple[int, dict[str, Any]]]:
    """Every receipt that arrived, with the index of the POST that carried it."""
    return [(index, item) for index, post in enumerate(posts) for item in post.json()["receipts"]]


class TestBatchedReceipts:
    def test_level_three_receipts_arrive_once_in_order_in_few_signed_posts(
        self, stack: Stack
    ) -> None:
        """200 level-3 messages with dlr-batch: each of the 400 receipts arrives exactly once,
        level 1 before level 2 of each message, in far fewer POSTs than receipts, each POST
        verified by the Standard Webhooks reference library."""
        body = {
            "to": "+14155552671", "from": "smsq", "content": "batched", "dlr": True,
            "dlr-level": 3, "dlr-url": f"{stack.receiver_url}{PATH}", "dlr-batch": True,
        }  # fmt: skip
        ids = set()
        for _ in range(MESSAGES):
            reply = stack.send(body)
            assert reply.status_code == 202, reply.text
            ids.add(reply.json()["id"])
        expected = 2 * MESSAGES
        wait_for(
            lambda: len(receipts_in(batched_posts(stack))) >= expected,
            90,
            f"{expected} batched receipts did not arrive",
        )
        posts = batched_posts(stack)
        arrived = receipts_in(posts)
        assert sorted((r["id"], r["level"]) for _, r in arrived) == sorted(
            (message_id, level) for message_id in ids for level in (1, 2)
        )
        by_key = {(r["id"], r["level"]): (index, r) for index, r in arrived}
        for message_id in ids:
            (post_1, first), (post_2, second) = by_key[(message_id, 1)], by_key[(message_id, 2)]
            assert post_1 < post_2
            assert first["seq"] < second["seq"]
            assert (first["status"], second["status"]) == ("accepted", "delivered")
        assert len(posts) < expected / 5, f"{len(posts)} POSTs for {expected} receipts"
        verifier = Webhook(stack.key.webhook_secret)
        for post in posts:
            verified = verifier.verify(post.body, post.headers)
            assert post.headers["webhook-id"].startswith("batch_")
            assert len(verified["receipts"]) <= 100
        sample = stack.message(next(iter(ids)))
        assert [h["result"] for h in sample["receipts"]["2"]["history"]] == ["sent"]
        assert orjson.loads(posts[0].body)["receipts"][0]["event_id"].startswith("evt_")
