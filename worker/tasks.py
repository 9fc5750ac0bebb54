"""Thin Celery tasks: parse the contract, call one plain function, map the outcome.

Run a worker with `celery -A worker.tasks worker -Q otp -P threads -c 32`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from celery import Task
from celery.exceptions import Reject

from worker import metrics
from worker.carriers.base import Carrier
from worker.carriers.registry import carrier_for_name
from worker.celery_app import MAX_COUNTDOWN_SECONDS, create_app
from worker.contract import (
    DRAIN_CARRIER_RECEIPTS,
    DRAIN_RECEIPTS,
    FLUSH_MO_PARTS,
    HANDLE_CARRIER_RECEIPT,
    POST_RECEIPT,
    ROUTE_MO,
    SEND_MANY,
    SEND_SMS,
)
from worker.inbound import ReceiptIntake, inbound_request
from worker.inbound import done as inbox_done
from worker.mo.intake import MoIntake
from worker.mo.webhook import due_again
from worker.otp.resend import RESEND_OTP, Resender
from worker.receipts.engine import EngineStoppedError, ReceiptEngine
from worker.receipts.intake import IntakeDrain
from worker.runtime import Runtime, build_receipt_engine, runtime
from worker.sending import Sender
from worker.signals import configure_logging as _connects_signals  # noqa: F401 - logs, metrics
from worker.store.inbox import Inbox

log = logging.getLogger(__name__)

app = create_app(with_tasks=False)
T = TypeVar("T")

# A fast carrier receipt can overtake the storing of its carrier id: look again shortly.
UNKNOWN_RECEIPT_RETRIES = 3


@app.task(name=SEND_SMS)
def send_sms(message_id: str) -> str:
    """Submit a message's segments (those not yet submitted) to the carrier."""
    return _sender().send(message_id).status


@app.task(name=SEND_MANY)
def send_many(message_ids: list[str]) -> str:
    """`send_sms` for each id of a chunk of one lane (batch ingest); one failing id does not
    stop the others. Returns how many ended in each state, e.g. `accepted=15 submitting=1`."""
    rt = runtime()
    sender = _sender()
    tally: dict[str, int] = {}
    lane = metrics.current_lane.get()
    for outcome in sender.send_many([str(message_id) for message_id in message_ids]):
        tally[outcome.status] = tally.get(outcome.status, 0) + 1
        metrics.MESSAGES.labels(outcome.status, lane, rt.carrier.name).inc()
    return " ".join(f"{status}={count}" for status, count in sorted(tally.items()))


def _sender() -> Sender:
    rt = runtime()
    return Sender(
        rt.store, rt.carrier, rt.publisher, rt.settings.effective_public_url, receipts=rt.router
    )


_parts_lock = threading.Lock()


def _once(name: str, build: Callable[[Runtime], T]) -> T:
    """A part built from this process's runtime once, not per task (registering its Lua
    scripts hashes them)."""
    rt = runtime()
    part = rt.parts.get(name)
    if part is None:
        with _parts_lock:
            part = rt.parts.get(name)
            if part is None:
                part = rt.parts[name] = build(rt)
    return cast(T, part)


@app.task(name=POST_RECEIPT)
def post_receipt(message_id: str, level: int) -> str:
    """Put the level's receipt in its endpoint's queue (the receipt engine delivers it)."""
    placed = runtime().router.route([(str(message_id), int(level))])
    return "routed" if placed else "gone"


@app.task(name=DRAIN_RECEIPTS)
def drain_receipts(endpoint: str, batching: int = 0) -> str:
    """Wake this process's receipt engine to drain one endpoint's queue; returns at once.
    `batching`: its receipts travel in `dlr-batch` POSTs."""
    try:
        _engine().ring(str(endpoint), batching=bool(batching))
    except EngineStoppedError as exc:
        raise Reject(exc, requeue=True) from exc  # another worker's engine takes it
    return "ringing"


def _engine() -> ReceiptEngine:
    return _once("engine", build_receipt_engine)


def stop_receipt_engine(timeout: float = 10.0) -> None:
    """Let this process's receipt engine finish its rounds (worker shutdown)."""
    rt = runtime()
    engine = rt.parts.get("engine")
    if isinstance(engine, ReceiptEngine):
        engine.stop(timeout)


@app.task(name=HANDLE_CARRIER_RECEIPT, bind=True, max_retries=UNKNOWN_RECEIPT_RETRIES)
def handle_carrier_receipt(
    self: Task[Any, Any], carrier_name: str, request: dict[str, Any], entry: str = ""
) -> str:
    """Apply an inbound carrier receipt request (queued as received by the API; `entry`: its
    inbox entry when it was kept there, removed once applied)."""
    rt = runtime()
    carrier = _carrier(carrier_name)
    last_try = self.request.retries >= UNKNOWN_RECEIPT_RETRIES
    try:
        outcome = ReceiptIntake(rt.store, rt.publisher, rt.router).handle(
            carrier, inbound_request(request), record_unknown=last_try
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # The request exists nowhere else: give it back to the queue rather than let a
        # failed task be acknowledged (if Redis is down, it stays unacknowledged and the
        # reconciler puts it back). Applying a receipt twice changes nothing.
        raise Reject(exc, requeue=True) from exc
    if outcome.unknown and not last_try:
        raise self.retry(countdown=min(2, MAX_COUNTDOWN_SECONDS))
    if entry:
        inbox_done(rt.redis, entry)
    return f"applied={outcome.applied} unchanged={outcome.unchanged} unknown={outcome.unknown}"


@app.task(name=DRAIN_CARRIER_RECEIPTS)
def drain_carrier_receipts() -> str:
    """Apply the carrier receipt requests kept in the inbox, many at a time, until none is
    due (worker.receipts.intake); returns what it did."""
    return str(_once("intake", build_intake_drain).drain())


def build_intake_drain(rt: Runtime) -> IntakeDrain:
    intake = ReceiptIntake(rt.store, rt.publisher, rt.router)
    return IntakeDrain(Inbox(rt.redis), intake, _carrier, rt.publisher)


def _carrier(name: str) -> Carrier:
    rt = runtime()
    if name == rt.carrier.name:
        return rt.carrier
    return carrier_for_name(name, rt.settings, rt.http)


# Inbound (MO) messages (worker.mo).
@app.task(name=FLUSH_MO_PARTS)
def flush_mo_parts(carrier: str, sender: str, recipient: str, reference: int, total: int) -> str:
    """A multipart MO's wait is over: store whatever parts came (nothing if it was whole)."""
    intake = _once("mo", lambda rt: MoIntake.build(rt.redis, rt.publisher, rt.settings))
    mo_id = intake.flush(str(carrier), str(sender), str(recipient), int(reference), int(total))
    return "stored" if mo_id else "complete"


@app.task(name=ROUTE_MO)
def route_mo(mo_id: str) -> str:
    """Put an MO's webhook in its endpoint's queue again (reconciled, replayed)."""
    rt = runtime()
    found = due_again(rt.receipts.mo, str(mo_id), rt.router.clock())
    if found is None:
        return "done"
    record, due = found
    rt.router.route_mo(record.id, record.mo_url, record.key_id, due)
    return "routed"


# OTP: the scheduled resend; the producer schedules it by name (`worker.otp.resend`).
@app.task(name=RESEND_OTP)
def resend_otp(challenge_id: str) -> str:
    """Resend a pending OTP code whose SMS got no delivered receipt in time (at most once)."""
    rt = runtime()
    return Resender(rt.store, rt.publisher, rt.settings).resend(challenge_id)
