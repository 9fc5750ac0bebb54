"""Celery signal handlers of a worker process: logging, per-task log context, metrics.

Imported by `worker.tasks`, so connected in every worker before Celery sets up logging:

- `celeryd_init`, `setup_logging`: our JSON logs (`worker.logs`) at the worker's `-l` level,
  instead of Celery's own format, from before the worker's first warning; a worker of the
  bulk lane alone lowers its CPU priority (`SMSQ_BULK_WORKER_NICE`);
- `task_prerun`: binds the task, its message id (the first argument of `sms.send` and
  `sms.dlr.post`) and lane to every log line the task writes, from any module;
- `task_postrun`: one `task done` line per task, the task's metrics (`worker.metrics`), and
  the context cleared for the thread's next task.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import structlog
from celery import signals

from worker import logs, metrics
from worker.contract import HANDLE_CARRIER_RECEIPT, POST_RECEIPT, SEND_SMS, Queue
from worker.runtime import runtime
from worker.settings import get_settings

log = logs.get_logger(__name__)
_started: ContextVar[float] = ContextVar("smsq_task_started", default=0.0)
MAX_RESULT_CHARS = 80


@signals.celeryd_init.connect
def configure_logging_early(options: dict[str, Any] | None = None, **_: Any) -> None:
    """Before the worker's first own warnings (running as root…), so they are JSON too."""
    logs.configure((options or {}).get("loglevel") or "WARNING")
    set_lane_priority((options or {}).get("queues"))


def set_lane_priority(queues: object, nice: Callable[[int], int] = os.nice) -> int:
    """A worker of one lane alone gets that lane's CPU priority: the bulk lane yields the
    CPU to the others (`SMSQ_BULK_WORKER_NICE`) and the OTP lane goes first
    (`SMSQ_OTP_WORKER_NICE`, negative: needs root or CAP_SYS_NICE, else a warning and no
    change), so an OTP waits for a core behind neither a campaign nor the receipts.
    Returns the increment applied."""
    if isinstance(queues, str):
        names = [n.strip() for n in queues.split(",")]
    elif isinstance(queues, list | tuple):
        names = [str(n).strip() for n in queues]
    else:
        return 0
    settings = get_settings()
    increments = {
        Queue.BULK.value: settings.bulk_worker_nice,
        Queue.OTP.value: settings.otp_worker_nice,
    }
    increment = increments.get(names[0], 0) if len(names) == 1 else 0
    if not increment:
        return 0
    try:
        nice(increment)
    except PermissionError:
        log.warning("worker priority unchanged: not permitted", lane=names[0], nice=increment)
        return 0
    return increment


@signals.worker_shutting_down.connect
def stop_receipts(**_: Any) -> None:
    """A warm shutdown: the receipt engine finishes its rounds and hands its endpoints back."""
    from worker.tasks import stop_receipt_engine  # only workers have one

    stop_receipt_engine()


@signals.setup_logging.connect
def configure_logging(loglevel: str | int | None = None, **_: Any) -> None:
    logs.configure(loglevel or "WARNING")


def task_context(name: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """What every log line of a task carries: ids only, never content or numbers."""
    context: dict[str, Any] = {"task": name}
    if name in (SEND_SMS, POST_RECEIPT) and args:
        context["message_id"] = str(args[0])
    if name == POST_RECEIPT and len(args) > 1:
        context["receipt_level"] = args[1]
    elif name == HANDLE_CARRIER_RECEIPT and args:
        context["carrier"] = str(args[0])
    return context


def _lane(task: Any) -> str:
    info = getattr(task.request, "delivery_info", None) or {}
    return str(info.get("routing_key") or "")


@signals.task_prerun.connect
def bind_task(task_id: str, task: Any, args: tuple[Any, ...] | None = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, **task_context(task.name, args or ()))
    metrics.current_lane.set(_lane(task))
    _started.set(time.perf_counter())


def _carrier_name() -> str:
    """The carrier this worker sends with (the send task built its runtime already)."""
    return runtime().carrier.name


@signals.task_postrun.connect
def finish_task(
    task: Any,
    args: tuple[Any, ...] | None = None,
    retval: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    elapsed = time.perf_counter() - _started.get() if _started.get() else 0.0
    try:
        metrics.TASK_SECONDS.labels(task.name).observe(elapsed)
        lane = metrics.current_lane.get()
        metrics.count_task(task.name, tuple(args or ()), retval, state, lane, _carrier_name)
        if logging.getLogger(__name__).isEnabledFor(logging.INFO):
            result = retval if isinstance(retval, str) else type(retval).__name__
            log.info(
                "task done",
                state=state,
                result=result[:MAX_RESULT_CHARS],
                ms=round(elapsed * 1000, 1),
            )
    finally:
        structlog.contextvars.clear_contextvars()
        metrics.current_lane.set("")
        _started.set(0.0)
