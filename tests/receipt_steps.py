"""Client receipts' steps as the receipt engine takes them, for tests that drive the store."""

from __future__ import annotations

from worker.clock import now_ms
from worker.store import Store
from worker.store.receipts import ReceiptStore, Settlement


def claim(store: Store, message_id: str, level: int, lease_ms: int = 30_000) -> int:
    """Claim a receipt for an attempt: its seq, or 0 / -1 (`ReceiptStore.claim`)."""
    (answer,) = ReceiptStore(store.redis).claim([(message_id, level)], now_ms(), lease_ms)
    return answer if isinstance(answer, int) else answer.seq


def settle(store: Store, message_id: str, level: int, outcome: str, due: int = 0) -> int:
    """Record an attempt's outcome (`sent`, `gone`, `dead`, `retry` due then)."""
    event = {"event": f"receipt_{outcome}", "level": level}
    settlement = Settlement(message_id, level, outcome, event, due=due)
    (answer,) = ReceiptStore(store.redis).settle([settlement], now_ms())
    return answer
