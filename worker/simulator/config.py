"""The carrier simulator's knobs, fixed when the server starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.webhooks import decode_secret


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
    # Scripting, all off by default; `worker.simulator.script` applies them.
    latency_dist: str = "uniform"  # uniform | exponential (mean jitter) | lognormal (p99)
    error_rate_4xx: float = 0.0  # share of submissions answered 400 `rejected`
    outages: tuple[tuple[float, float], ...] = ()  # (start, end) seconds after start: 503s
    max_rate: float = 0.0  # submissions per second; beyond it 429 with Retry-After; 0 = none
    receipt_jitter: float = 0.0  # plus a uniform random 0..jitter seconds per receipt
    duplicate_receipts: float = 0.0  # share of final receipts sent twice
    out_of_order_receipts: float = 0.0  # share followed by a late intermediate ENROUTE
    fake_fast_receipts: float = 0.0  # share answered at once with DELIVRD, whatever happens
    receipts_for: str = "segment"  # segment | last (only the last part of a message)
    # Reliability: a repeated client_ref gets the first carrier id and sends nothing,
    # as a carrier honouring an idempotency key does (`smsq carrier-sim` turns it on).
    dedupe_client_refs: bool = False
    # At most this many receipt POSTs in flight; the rest wait their turn. httpx's async pool
    # slows down with the square of its waiting requests, so a burst of thousands of receipts
    # costs ~8 ms of CPU each unbounded and ~2 ms at 16.
    receipt_concurrency: int = 16
    # Receipts per POST: 1 sends each alone (a JSON object, like Kannel and Twilio); more
    # collects those due for the same URL into one JSON list of up to this many, sent at the
    # latest `receipt_batch_window_ms` after the first of them came due (like Infobip).
    receipt_batch: int = 1
    receipt_batch_window_ms: float = 50.0
    # A Standard Webhooks secret (`whsec_…`, smsq's carrier `receipt_secret`): every receipt
    # request is signed with it, and batched receipts are grouped by the receipt URL's path
    # (one request for many segments, whose per-segment tokens it cannot all carry).
    receipt_secret: str = field(default="", repr=False)
    # Where `POST /mo` sends inbound messages unless its body names a URL: smsq's
    # `/carriers/{name}/mo` (`smsq carrier-sim` defaults to SMSQ_PUBLIC_URL's `sim` carrier).
    mo_url: str = ""

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
        if self.receipt_concurrency < 1:
            raise ValueError("receipt_concurrency must be >= 1")
        self._check_receipts()
        self._check_scripting()

    def _check_receipts(self) -> None:
        if self.receipt_batch < 1 or self.receipt_batch_window_ms < 0:
            raise ValueError("receipt_batch must be >= 1 and receipt_batch_window_ms >= 0")
        if self.receipt_secret:
            decode_secret(self.receipt_secret)  # ValueError: not `whsec_` + base64

    def _check_scripting(self) -> None:
        ratios = ("error_rate_4xx", "duplicate_receipts", "out_of_order_receipts",
                  "fake_fast_receipts")  # fmt: skip
        for name in ratios:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_rate_5xx + self.error_rate_429 + self.error_rate_4xx > 1.0:
            raise ValueError("the error rates together must not exceed 1")
        if self.max_rate < 0 or self.receipt_jitter < 0:
            raise ValueError("max_rate and receipt_jitter must not be negative")
        if self.latency_dist not in ("uniform", "exponential", "lognormal"):
            raise ValueError("latency_dist must be uniform, exponential or lognormal")
        if self.receipts_for not in ("segment", "last"):
            raise ValueError("receipts_for must be segment or last")
        if any(not 0 <= start < end for start, end in self.outages):
            raise ValueError("outages must be (start, end) with 0 <= start < end")
