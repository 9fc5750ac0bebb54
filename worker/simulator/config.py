"""The carrier simulator's knobs, fixed when the server starts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated SMSC behaves: latency, receipts and scripted failures."""

    latency_ms: float = 0.0  # added to every /submit answer
    jitter_ms: float = 0.0  # plus a uniform random 0..jitter_ms
    receipt_delay: float = 0.2  # seconds between accepting a segment and its receipt
    undelivered_ratio: float = 0.0  # share of receipts that say UNDELIV
    expired_ratio: float = 0.0  # share of receipts that say EXPIRED
    error_rate_5xx: float = 0.0  # share of submissions answered 503
    error_rate_429: float = 0.0  # share of submissions answered 429
    retry_after: float = 1.0  # seconds, in the 429's Retry-After header
    reject_prefixes: tuple[str, ...] = ()  # destinations starting so get 400 invalid_destination
    seed: int | None = None  # for a repeatable sequence of random outcomes
    receipt_attempts: int = 3  # tries per receipt POST before it is dropped
    receipt_timeout: float = 5.0  # seconds, per receipt POST

    def __post_init__(self) -> None:
        for name in ("undelivered_ratio", "expired_ratio", "error_rate_5xx", "error_rate_429"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.undelivered_ratio + self.expired_ratio > 1.0:
            raise ValueError("undelivered_ratio + expired_ratio must not exceed 1")
        if self.error_rate_5xx + self.error_rate_429 > 1.0:
            raise ValueError("error_rate_5xx + error_rate_429 must not exceed 1")
        for name in ("latency_ms", "jitter_ms", "receipt_delay", "retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.receipt_attempts < 1 or self.receipt_timeout <= 0:
            raise ValueError("receipt_attempts must be >= 1 and receipt_timeout > 0")
