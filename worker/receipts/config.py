"""The receipt engine's settings, read from `Settings` once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Timeouts, fairness caps and batching of client receipt delivery.

    `deadline` bounds one attempt (connect, send, status line and headers), wall clock;
    `endpoint_concurrency` requests are in flight per endpoint at most (a drain runs in one
    process at a time, so this holds across processes), `key_concurrency` per API key and
    `max_in_flight` in all, per process. A drain takes up to `take` due receipts at a time
    (fewer from a failing endpoint), and when its queue is empty looks again `linger_rounds`
    times, `linger_ms` apart, before it ends (receipts that come meanwhile need no new drain).
    `dlr-batch` receipts to one URL travel `batch_max` per POST, gathered for `batch_window_ms`.
    """

    deadline: float = 10.0
    connect_timeout: float = 3.0
    endpoint_concurrency: int = 4
    key_concurrency: int = 16
    max_in_flight: int = 256
    take: int = 8
    linger_ms: int = 20
    linger_rounds: int = 2
    batch_max: int = 100
    batch_window_ms: int = 200

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        return cls(
            deadline=settings.dlr_timeout,
            connect_timeout=min(settings.dlr_connect_timeout, settings.dlr_timeout),
            endpoint_concurrency=settings.dlr_endpoint_concurrency,
            key_concurrency=settings.dlr_key_concurrency,
            max_in_flight=settings.dlr_max_in_flight,
            batch_max=settings.dlr_batch_max,
            batch_window_ms=settings.dlr_batch_window_ms,
        )

    def lease_ms(self, items: int) -> int:
        """How long a drain may hold `items` receipts: every wave of attempts at the deadline,
        plus a margin. After it, another drain (or the reconciler) may take them again."""
        waves = max(1, math.ceil(items / self.endpoint_concurrency))
        return int((waves * self.deadline + 5.0) * 1000)
