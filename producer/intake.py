"""Single sends in groups: `POST /sms/send` hands its body to one thread, which takes every send
waiting, validates each and writes them all in one pipelined round trip.

Measured on the API (docs/performance.md): per send, a hop to the thread pool and a round trip
to Redis cost more CPU than all the rest (system calls and thread wake-ups, not Python). With
many clients at once, a group carries several sends and pays those once; a lone send goes
alone at once (the thread takes what is waiting when it wakes, it never waits for company).
Each send in a group is still admitted on its own (revocation, limits, Idempotency-Key) and
gets its own answer or error. The thread stops when idle and starts again on the next send.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Any

from producer.desk import MessageDesk, PendingSend
from worker.keys import ApiKey

MAX_GROUP = 64  # sends written in one round trip at most
IDLE_SECONDS = 5.0  # the thread stops after this long without a send

# (the loop to answer on, the future to answer, the key, the body, the Idempotency-Key)
_Item = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[dict[str, Any]]", ApiKey, bytes, str | None
]
_Answer = tuple["asyncio.Future[dict[str, Any]]", "dict[str, Any] | BaseException"]


class Intake:
    """The send thread of one API process."""

    def __init__(self, desk: MessageDesk) -> None:
        self.desk = desk
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def send(self, key: ApiKey, raw: bytes, idempotency_key: str | None) -> dict[str, Any]:
        """The 202 answer of one send, or its error (awaited on the event loop)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._queue.put((loop, future, key, raw, idempotency_key))
        self._ensure_running()
        return await future

    def _ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smsq-intake", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                group = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                if self._retire():
                    return
                continue
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            _answer(group, self._handle(group))

    def _retire(self) -> bool:
        """Stop being the intake thread after an idle spell; False if a send came meanwhile
        and nobody else took over (then this thread goes on)."""
        with self._lock:
            self._thread = None
        if self._queue.empty():
            return True  # a send that comes now finds no thread and starts one
        with self._lock:
            if self._thread is not None:
                return True  # a send started another thread meanwhile
            self._thread = threading.current_thread()
            return False

    def _handle(self, group: list[_Item]) -> list[dict[str, Any] | BaseException]:
        """Each send's answer or error, in order."""
        outcomes: list[dict[str, Any] | BaseException | None] = []
        pending: list[PendingSend] = []
        for _loop, _future, key, raw, idempotency_key in group:
            try:
                pending.append(self.desk.prepare_request(raw, key, idempotency_key))
                outcomes.append(None)
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                outcomes.append(exc)
        try:
            written = iter(self.desk.commit_sends(pending) if pending else [])
        except Exception as exc:  # noqa: BLE001 - Redis failed: every send of the group hears it
            return [exc if o is None else o for o in outcomes]
        return [next(written) if o is None else o for o in outcomes]


def _answer(group: list[_Item], outcomes: list[dict[str, Any] | BaseException]) -> None:
    """Hand every answer to its loop, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
    for (loop, future, *_rest), outcome in zip(group, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nobody waits
            loop.call_soon_threadsafe(_resolve, answers)


def _resolve(answers: list[_Answer]) -> None:
    for future, outcome in answers:
        if future.done():  # the request was cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
