"""When a failed receipt is tried again, when it is given up on, and sending it again later.

After attempt n fails, attempt n+1 comes `RETRY_SCHEDULE_SECONDS[n-1]` later (± 20 % jitter,
never before the endpoint's `Retry-After`): about 26 h in all, the Standard Webhooks example
schedule; a receipt still failing 24 h after its first failure, or out of attempts, is
dead-lettered, and `smsq dlr replay` (`replay`) sends it again with a fresh schedule. A 410
stops at once. Meanwhile a failing endpoint is also backed off as a whole
(`worker.receipts.endpoints.HealthPolicy`).
"""

from __future__ import annotations

import random
from typing import Protocol

from worker.contract import POST_RECEIPT, Queue
from worker.errors import WebhookError
from worker.queueing import Publisher
from worker.store import DEAD_LETTER_KEY, Store

RETRY_SCHEDULE_SECONDS = (5, 30, 120, 600, 1800, 3600, 7200, 18000, 36000, 28800)
GIVE_UP_AFTER_MS = 24 * 3600 * 1000


class Attempted(Protocol):
    """What the schedule needs of a claimed receipt (or MO webhook)."""

    @property
    def attempt(self) -> int: ...
    @property
    def base(self) -> int: ...
    @property
    def first_attempt_at(self) -> int | None: ...


def next_attempt_at(
    claim: Attempted, error: WebhookError, now: int, rng: random.Random | None = None
) -> int | None:
    """When the receipt's (or MO webhook's) next attempt is due (ms), or None: dead-letter
    it."""
    first = claim.first_attempt_at or now
    # Attempts before a replay do not count against the fresh schedule a replay starts.
    index = claim.attempt - claim.base - 1
    if index >= len(RETRY_SCHEDULE_SECONDS) or now - first > GIVE_UP_AFTER_MS:
        return None
    delay = RETRY_SCHEDULE_SECONDS[index] * (rng or random).uniform(0.8, 1.2)
    delay = max(delay, error.retry_after or 0.0)
    return now + int(delay * 1000)


def dead_letters(store: Store, since_ms: int = 0, until_ms: int | None = None) -> list[str]:
    """Dead-lettered receipts (`{message_id}:{level}`) that died in the time range."""
    upper: int | str = "+inf" if until_ms is None else until_ms
    return [str(m) for m in store.redis.zrangebyscore(DEAD_LETTER_KEY, since_ms, upper)]


def replay(store: Store, publisher: Publisher, targets: list[str]) -> int:
    """Send receipts again: each target is a message id (every level it opened) or a
    `{message_id}:{level}`. Same event id, seq and content, a fresh retry schedule; level 2 of
    a level-3 message still waits for level 1. Returns how many receipts were queued."""
    queued = 0
    for target in targets:
        message_id, _, only = target.partition(":")
        for level in (int(only),) if only else (1, 2):
            if store.replay_receipt(message_id, level):
                publisher.publish(POST_RECEIPT, [message_id, level], Queue.DLR)
                store.add_event(message_id, "receipt_replay", level=level)
                queued += 1
    return queued
