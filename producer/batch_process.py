"""Batches accepted in a helper process, so that the API process stays free for everything else.

Validating and storing 100,000 recipients is seconds of Python. In a thread of the API process
it holds the interpreter lock most of that time, and every other request — an OTP send, a
health check — waits for the lock at each step it takes (measured: OTP p50 55 ms, p99 159 ms
during a 100,000-recipient batch, against a few ms otherwise). One helper process per API
process runs the same `MessageDesk` steps on its own interpreter; the API process only reads
the body and hands the bytes over. The helper starts with the first batch (which, like any
batch that comes before the helper is up, is accepted in the API's thread pool, a step at a
time) and stops with the API; errors it meets (422, 429, 401…) are raised in the API process
as if met there. It runs at the bulk lane's lower CPU priority (`SMSQ_BULK_WORKER_NICE`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from worker.errors import SmsqError
from worker.keys import ApiKey
from worker.settings import Settings

_helper: dict[str, Any] = {}  # in the helper process: its MessageDesk


def _start(settings: Settings) -> None:
    from producer.services import build_services  # the helper builds its own, once

    # Bulk work gets the CPU last, as the bulk lane's worker does (SMSQ_BULK_WORKER_NICE):
    # on a busy machine the API process and Redis answer first.
    os.nice(settings.bulk_worker_nice)
    _helper["desk"] = build_services(settings).desk


def _ready() -> bool:
    return "desk" in _helper


def _accept(
    raw: bytes, key_id: str, caller: ApiKey, idempotency: str | None
) -> dict[str, Any] | tuple[type[SmsqError], tuple[Any, ...], dict[str, Any]]:
    """In the helper: the batch's answer, or the refusal as (type, args, attributes)."""
    try:
        return dict(
            _helper["desk"].accept_batch(raw, key_id, caller=caller, idempotency=idempotency).run()
        )
    except SmsqError as exc:  # sent back whole: its type, message and fields
        return type(exc), exc.args, dict(vars(exc))


def _rebuilt(kind: type[SmsqError], args: tuple[Any, ...], state: dict[str, Any]) -> SmsqError:
    error = kind.__new__(kind)
    error.args = args
    vars(error).update(state)
    return error


class BatchProcess:
    """The helper process of one API process (started on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future[bool] | None = None

    def ready(self) -> bool:
        """True once the helper runs; the first call starts it (in the background: until it
        is up, the API accepts batches in its thread pool, a step at a time)."""
        with self._lock:
            if self._started is None:
                self._started = self._pool_locked().submit(_ready)
            return self._started.done() and not self._started.exception()

    async def accept(
        self, raw: bytes, key_id: str, caller: ApiKey, idempotency: str | None
    ) -> dict[str, Any]:
        """The 202 answer of a batch accepted in the helper; its refusal raised here."""
        future = self._ensure().submit(_accept, raw, key_id, caller, idempotency)
        outcome = await asyncio.wrap_future(future)
        if isinstance(outcome, tuple):
            raise _rebuilt(*outcome)
        return outcome

    def _ensure(self) -> ProcessPoolExecutor:
        with self._lock:
            return self._pool_locked()

    def _pool_locked(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(self.settings,),
            )
        return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
                self._started = None
