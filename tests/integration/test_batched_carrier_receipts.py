"""Batched carrier receipts end to end: the simulator POSTs its receipts as signed JSON lists of up
to 50 (receipts of many segments, vouched for by its `receipt_secret`), the API keeps each list
as one inbound request, one task applies it."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.stack import RECEIPT_SECRET, running_stack, wait_for
from tests.receiver import Receiver
from worker.simulator import SimulatorConfig

pytestmark = pytest.mark.integration

MESSAGES = 300


def test_batched_receipts_deliver_every_message_and_each_client_receipt_once(
    redis_url: str,
) -> None:
    """300 level-3 messages: all delivered, a level-1 and a level-2 receipt each, exactly once,
    from far fewer receipt requests than receipts."""
    sim = SimulatorConfig(
        receipt_delay=0.2, receipt_batch=50, receipt_batch_window_ms=200,
        receipt_secret=RECEIPT_SECRET,  # a signed list may hold receipts of many segments
    )  # fmt: skip
    receiver = Receiver()
    with running_stack(redis_url, sim=sim, receiver=receiver) as stack:

        def send(i: int) -> str:
            body = {
                "to": f"+4915112{i:06d}", "from": "smsq", "content": f"message {i}",
                "dlr": True, "dlr-level": 3, "dlr-url": f"{stack.receiver_url}/receipts",
            }  # fmt: skip
            response = stack.send(body)
            assert response.status_code == 202, response.text
            message_id: str = response.json()["id"]
            return message_id

        with ThreadPoolExecutor(8) as pool:
            ids = set(pool.map(send, range(MESSAGES)))
        assert len(ids) == MESSAGES
        receiver.wait_for(2 * MESSAGES, timeout=90)
        stats = wait_for(
            lambda: (s := stack.sim_stats())["receipts_sent"] >= MESSAGES and s,
            30,
            "the simulator did not send every receipt",
        )
        statuses = Counter(stack.message(message_id)["status"] for message_id in ids)
        assert statuses == {"delivered": MESSAGES}
        # Nothing more arrives later: every client receipt came exactly once.
        wait_for(lambda: stack.redis.zcard("smsq:watch:receipt") == 0, 20, "receipts still open")
        received = receiver.snapshot()
    levels = Counter((r.json()["id"], str(r.json()["level"])) for r in received)
    assert set(levels) == {(message_id, level) for message_id in ids for level in ("1", "2")}
    assert set(levels.values()) == {1}
    assert (stats["receipts_sent"], stats["receipts_failed"]) == (MESSAGES, 0)
    assert stats["receipt_requests"] <= MESSAGES // 5, stats["receipt_requests"]
