"""Prometheus metrics: what the processes count, and what `/metrics` reads from Redis.

Counters and histograms are kept by whichever process sees the event: workers count sends,
segments, carrier calls, receipts and tasks (`worker.signals`, `MeasuredCarrier`); the API
counts HTTP requests and OTP outcomes (`producer.routes.metrics`). With several processes,
`PROMETHEUS_MULTIPROC_DIR` (prometheus_client's own variable; `smsq up` sets it to
`.smsq/metrics`, wiped at start) makes each process write its values to files there, and the
API's `/metrics` adds them all up (`MultiProcessCollector`). Without it, `/metrics` shows the
API process's own values only.

Gauges of shared state (queue depths, scheduler backlog, dead letters, circuit breakers) are
not kept by any process: `StoreCollector` reads them from Redis at scrape time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from worker.carriers.base import Accepted, Carrier, CarrierReceipt, InboundRequest
from worker.carriers.base import SegmentSubmission as Segment
from worker.contract import Queue
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
)
from worker.store import DEAD_LETTER_KEY
from worker.store.keys import (
    BREAKER_PATTERN,
    SCHEDULE_INFLIGHT_KEY,
    SCHEDULE_KEY,
    SCHEDULER_LOCK_KEY,
    carrier_of_breaker_key,
)

# prometheus_client decides its mode from this variable when it is first imported; we read it
# at the same moment, so both agree for the life of the process.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

# The lane (queue) of the task running in this thread, set by `worker.signals`.
current_lane: ContextVar[str] = ContextVar("smsq_lane", default="")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

MESSAGES = Counter(
    "smsq_messages",
    "Messages by the state a send task left them in (a retried message counts per attempt).",
    ["state", "lane", "carrier"],
)
SEGMENTS = Counter(
    "smsq_segments",
    "Segment submissions by outcome: accepted, rejected, unavailable, unknown, error.",
    ["state", "lane", "carrier"],
)
CARRIER_SECONDS = Histogram(
    "smsq_carrier_request_seconds",
    "Time of one segment submission to a carrier, by outcome.",
    ["carrier", "outcome"],
    buckets=LATENCY_BUCKETS,
)
CARRIER_ERRORS = Counter(
    "smsq_carrier_errors",
    "Failed segment submissions by kind: unavailable, rejected, unknown_outcome, other.",
    ["carrier", "kind"],
)
CARRIER_RECEIPTS = Counter(
    "smsq_carrier_receipts",
    "Segment receipts parsed from carriers, by the segment state they report.",
    ["carrier", "state"],
)
CARRIER_RECEIPTS_APPLIED = Counter(
    "smsq_carrier_receipts_applied",
    "Carrier receipts by what they did: applied, unchanged (duplicate or stale), unknown id.",
    ["carrier", "outcome"],
)
CARRIER_RECEIPTS_REFUSED = Counter(
    "smsq_carrier_receipts_refused",
    "Carrier receipt requests (or receipts) refused, by reason: unknown_carrier, rate_limited, "
    "missing_token, bad_token, bad_signature, no_server_key, too_many_receipts, wrong_segment, "
    "parking_full.",
    ["carrier", "reason"],
)
RECEIPT_ATTEMPTS = Counter(
    "smsq_receipt_attempts",
    "Client receipt (dlr-url) delivery attempts by result: sent, retry, gone, dead.",
    ["result"],
)
MO_RECEIVED = Counter(
    "smsq_mo",
    "Inbound (MO) messages by outcome: queued (webhook to its owner), stored (owner without "
    "mo-url), unowned, duplicate, part (waiting for its other parts).",
    ["carrier", "outcome"],
)
MO_REFUSED = Counter(
    "smsq_carrier_mo_refused",
    "Inbound (MO) requests refused at /carriers/{name}/mo, by reason: unknown_carrier, "
    "rate_limited, missing_token, bad_token, bad_signature, no_server_key, invalid.",
    ["carrier", "reason"],
)
MO_WEBHOOK_ATTEMPTS = Counter(
    "smsq_mo_webhook_attempts",
    "Inbound message webhook (mo-url) delivery attempts by result: sent, retry, gone, dead.",
    ["result"],
)
OPTOUT_CHANGES = Counter(
    "smsq_optouts",
    "Opt-out list changes by inbound keyword: added (STOP…), removed (START…); by list: key, "
    "deployment (the MO had no owner).",
    ["change", "list"],
)
TASKS = Counter("smsq_tasks", "Celery tasks run, by task and final state.", ["task", "state"])
TASK_SECONDS = Histogram(
    "smsq_task_seconds", "Run time of Celery tasks.", ["task"], buckets=LATENCY_BUCKETS
)
HTTP_REQUESTS = Counter(
    "smsq_http_requests", "API requests by route, method and status.", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "smsq_http_request_seconds", "API request time by route.", ["route"], buckets=LATENCY_BUCKETS
)
OTP_SENDS = Counter(
    "smsq_otp_sends",
    "OTP send requests by outcome: accepted, refused (limits), invalid, unavailable, error.",
    ["outcome"],
)
OTP_VERIFICATIONS = Counter(
    "smsq_otp_verifications",
    "OTP checks by status: approved (valid), invalid, expired, max_attempts, not_found…",
    ["status"],
)


def _error_kind(exc: CarrierError) -> str:
    if isinstance(exc, CarrierUnavailableError):
        return "unavailable"
    if isinstance(exc, CarrierRejectedError):
        return "rejected"
    if isinstance(exc, CarrierUnknownOutcomeError):
        return "unknown_outcome"
    return "other"


_SEGMENT_STATE = {
    "unavailable": "unavailable",
    "rejected": "rejected",
    "unknown_outcome": "unknown",
    "other": "error",
}


class MeasuredCarrier:
    """A `Carrier` that times and counts what the carrier it wraps does; its name and declared
    capabilities are the wrapped carrier's."""

    def __init__(self, inner: Carrier) -> None:
        self.inner = inner
        self.name = inner.name
        self.submits_whole_text = inner.submits_whole_text
        self.honours_client_ref = inner.honours_client_ref
        self.acknowledges_by_receipt = inner.acknowledges_by_receipt

    def submit(self, segment: Segment) -> Accepted:
        started = time.perf_counter()
        lane = current_lane.get()
        try:
            accepted = self.inner.submit(segment)
        except CarrierError as exc:
            kind = _error_kind(exc)
            carrier = exc.carrier or self.name
            CARRIER_SECONDS.labels(carrier, kind).observe(time.perf_counter() - started)
            CARRIER_ERRORS.labels(carrier, kind).inc()
            SEGMENTS.labels(_SEGMENT_STATE[kind], lane, carrier).inc()
            raise
        carrier = accepted.carrier or self.name
        CARRIER_SECONDS.labels(carrier, "accepted").observe(time.perf_counter() - started)
        SEGMENTS.labels("accepted", lane, carrier).inc()
        return accepted

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        receipts = self.inner.parse_receipts(request)
        for receipt in receipts:
            CARRIER_RECEIPTS.labels(self.name, str(receipt.status)).inc()
        return receipts


def measured(carrier: Carrier) -> Carrier:
    """`carrier`, timed and counted (see `MeasuredCarrier`)."""
    return MeasuredCarrier(carrier)


def count_task(
    task: str,
    args: tuple[Any, ...],
    retval: Any,
    state: str | None,
    lane: str,
    carrier: Callable[[], str],
) -> None:
    """Count one finished task, and what its return value says (`worker.tasks`); `carrier`
    names the carrier a sent message went to (asked only for a send)."""
    TASKS.labels(task, state or "UNKNOWN").inc()
    if state != "SUCCESS" or not isinstance(retval, str):
        return
    if task == "sms.send":
        MESSAGES.labels(retval, lane, carrier()).inc()
    elif task == "sms.carrier_dlr" and args:
        for part in retval.split():
            outcome, _, count = part.partition("=")
            if count.isdigit() and int(count):
                CARRIER_RECEIPTS_APPLIED.labels(str(args[0]), outcome).inc(int(count))


@dataclass(frozen=True, slots=True)
class Gauges:
    """Shared state read from Redis in one round trip (for `/metrics` and `smsq status`)."""

    queues: dict[str, int]  # tasks waiting per queue
    unacked: int  # delivered to a worker, not yet acknowledged (kombu's `unacked` hash)
    backlog: int  # jobs in the durable schedule
    overdue: int  # of which more than 5 s past due (the scheduler is behind or down)
    inflight: int  # popped by a scheduler, not yet published
    scheduler_up: bool  # a scheduler holds the lock
    dead_letters: int  # client receipts given up on


def read_gauges(client: redis.Redis) -> Gauges:
    queues = [q.value for q in Queue]
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
    pipe.hlen("unacked")
    pipe.zcard(SCHEDULE_KEY)
    pipe.zcount(SCHEDULE_KEY, "-inf", time.time_ns() // 1_000_000 - 5_000)
    pipe.hlen(SCHEDULE_INFLIGHT_KEY)
    pipe.exists(SCHEDULER_LOCK_KEY)
    pipe.type(DEAD_LETTER_KEY)
    *depths, unacked, backlog, overdue, inflight, scheduler, dead_type = pipe.execute()
    return Gauges(
        queues={q: int(d) for q, d in zip(queues, depths, strict=True)},
        unacked=int(unacked),
        backlog=int(backlog),
        overdue=int(overdue),
        inflight=int(inflight),
        scheduler_up=bool(scheduler),
        dead_letters=_dead_letters(client, _text(dead_type)),
    )


def _dead_letters(client: redis.Redis, kind: str) -> int:
    if kind == "list":
        return int(client.llen(DEAD_LETTER_KEY))
    if kind == "zset":
        return int(client.zcard(DEAD_LETTER_KEY))
    return 0


class StoreCollector(Collector):
    """Gauges read from Redis at scrape time: queues, schedule, dead letters, breakers."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def collect(self) -> Iterator[Metric]:
        gauges = read_gauges(self.redis)
        depth = GaugeMetricFamily("smsq_queue_depth", "Tasks waiting per queue.", labels=["queue"])
        for queue, value in gauges.queues.items():
            depth.add_metric([queue], value)
        yield depth
        for name, text, value in (
            ("smsq_queue_unacked", "Tasks delivered to workers, not yet acknowledged.",
             gauges.unacked),
            ("smsq_scheduler_backlog", "Jobs waiting in the durable schedule.", gauges.backlog),
            ("smsq_scheduler_overdue", "Scheduled jobs more than 5 s past due.", gauges.overdue),
            ("smsq_scheduler_up", "1 while a scheduler holds the lock.", int(gauges.scheduler_up)),
            ("smsq_receipt_dead_letters", "Client receipts given up on (replayable).",
             gauges.dead_letters),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, text, value)
        yield self._breakers()

    def _breakers(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "smsq_carrier_breaker_state",
            "1 for each carrier's current circuit state (closed, open, half-open).",
            labels=["carrier", "state"],
        )
        for carrier, state in breaker_states(self.redis).items():
            for candidate in ("closed", "open", "half-open"):
                family.add_metric([carrier, candidate], 1 if candidate == state else 0)
        return family


def breaker_states(client: redis.Redis) -> dict[str, str]:
    """Every carrier breaker that has state in Redis (a closed one with no failures has none)."""
    from worker.breaker import CircuitBreaker  # the carriers' own reading of their state

    states = {}
    for raw in client.scan_iter(match=BREAKER_PATTERN, count=100):
        key = _text(raw)
        carrier = carrier_of_breaker_key(key)
        states[carrier] = str(CircuitBreaker(client, key).state())
    return dict(sorted(states.items()))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _ThisProcess(Collector):
    """This process's own metrics (single-process mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(client: redis.Redis) -> bytes:
    """The text `/metrics` answers: every process's metrics plus the Redis gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROC_DIR is not None:
        MultiProcessCollector(registry, path=MULTIPROC_DIR)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(StoreCollector(client))
    return generate_latest(registry)
