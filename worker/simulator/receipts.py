"""The simulator's receipt sender: POSTs terminal receipts after a delay, retrying briefly.

One receipt per request by default (a JSON object, like Kannel or Twilio). With `batch` > 1
the receipts due for the same URL are collected and POSTed together as one JSON list (up to
`batch` per request, flushed at the latest `batch_window` seconds after the first one came due),
as carriers that batch their receipts do (e.g. Infobip's `results` array).

With a `secret` every request is signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`, as smsq's carrier `receipt_secret` expects), and batches group receipts by
the URL without its query: the per-segment `ref` and `token` of one URL cannot vouch for the
others, the signature does. Without one, batches group by the whole URL (each request keeps its
segment's token), so they only ever hold receipts of one segment.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httptools
import orjson

from worker import http1
from worker.simulator.state import SimulatorState
from worker.webhooks import signature_headers

logger = logging.getLogger(__name__)

# SMPP `err:` values the simulator reports with each final state.
ERROR_CODES = {"DELIVRD": "000", "UNDELIV": "001", "EXPIRED": "002"}
JSON_HEADERS = {"content-type": "application/json"}

Receipt = dict[str, str]


class ReceiptSender:
    """Schedules the receipts of accepted segments; POSTs them over kept-alive connections
    (`worker.http1`, a pool per origin: the simulator's CPU per receipt counts in the benches)."""

    def __init__(
        self,
        state: SimulatorState,
        *,
        delay: float,
        attempts: int,
        timeout: float,
        concurrency: int = 16,
        batch: int = 1,
        batch_window: float = 0.05,
        secret: str = "",
    ) -> None:
        self._state = state
        self._slots = asyncio.Semaphore(concurrency)  # receipt POSTs in flight
        self._delay = delay
        self._attempts = attempts
        self._timeout = timeout
        self._pools: dict[tuple[str, str, int], http1.Pool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch = batch
        self._batch_window = batch_window
        self._secret = secret
        # Batched mode: receipts not yet due (timers), and those due but not yet POSTed.
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_ids = itertools.count()
        self._due: dict[str, list[Receipt]] = {}
        self._flush_timers: dict[str, asyncio.TimerHandle] = {}

    async def start(self) -> None:
        """Get ready to send (at server start, never at import)."""
        self._pools = {}

    async def stop(self) -> None:
        """Drop the receipts not yet sent and close the client."""
        await self.cancel_pending()
        for pool in (self._pools or {}).values():
            pool.close()
        self._pools = None

    async def cancel_pending(self) -> None:
        """Cancel every scheduled receipt (on reset and shutdown)."""
        for handle in [*self._timers.values(), *self._flush_timers.values()]:
            handle.cancel()
        self._timers.clear()
        self._flush_timers.clear()
        self._due.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def schedule(self, url: str, carrier_id: str, status: str, delay: float | None = None) -> None:
        """Send a receipt for `carrier_id` to `url` after `delay` (default: the configured)."""
        wait = self._delay if delay is None else delay
        if self._batch > 1:
            # A timer, not a task per receipt: the batch is what costs a request.
            key = next(self._timer_ids)
            self._timers[key] = asyncio.get_running_loop().call_later(
                wait, self._came_due, key, url, carrier_id, status
            )
            return
        task = asyncio.create_task(self._deliver(url, carrier_id, status, wait))
        self._track(task)

    def _track(self, task: asyncio.Task[None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, carrier_id: str, status: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._send(url, orjson.dumps(_receipt(carrier_id, status)), [carrier_id])

    def _came_due(self, key: int, url: str, carrier_id: str, status: str) -> None:
        del self._timers[key]
        if self._secret:  # signed: one request may carry receipts of any segment
            url = urlunsplit(urlsplit(url)._replace(query=""))
        due = self._due.setdefault(url, [])
        due.append(_receipt(carrier_id, status))
        if len(due) >= self._batch:
            self._flush(url)
        elif url not in self._flush_timers:
            self._flush_timers[url] = asyncio.get_running_loop().call_later(
                self._batch_window, self._flush, url
            )

    def _flush(self, url: str) -> None:
        """POST the receipts due for `url` (one request, a JSON list)."""
        timer = self._flush_timers.pop(url, None)
        if timer is not None:
            timer.cancel()
        receipts = self._due.pop(url, [])
        if receipts:
            ids = [receipt["carrier_id"] for receipt in receipts]
            self._track(asyncio.create_task(self._send(url, orjson.dumps(receipts), ids)))

    async def _send(self, url: str, body: bytes, carrier_ids: list[str]) -> None:
        """POST `body` (the receipts of `carrier_ids`), retrying network errors, 5xx and 429."""
        msg_id = f"msg_{uuid.uuid4().hex}"  # the same on every attempt
        for attempt in range(1, self._attempts + 1):
            async with self._slots:
                outcome = await self._post(url, body, msg_id)
            if outcome == "sent":
                self._state.receipts_sent += len(carrier_ids)
                return
            if outcome == "refused" or attempt == self._attempts:
                break
            await asyncio.sleep(0.1 * 2 ** (attempt - 1))
        self._state.receipts_failed += len(carrier_ids)
        logger.warning(
            "receipt dropped",
            extra={"carrier_id": carrier_ids[0], "receipts": len(carrier_ids),
                   "host": urlsplit(url).netloc},
        )  # fmt: skip

    async def _post(self, url: str, body: bytes, msg_id: str) -> str:
        """`sent`, `retry` (network error, 5xx, 429) or `refused` (any other answer)."""
        self._state.receipt_requests += 1
        parts = urlsplit(url)
        headers = [("host", parts.netloc), *JSON_HEADERS.items()]
        if self._secret:
            signed = signature_headers([self._secret], msg_id, int(time.time()), body)
            headers += signed.items()
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._pool(parts).exchange("POST", target, headers, body)
                await answer.drain(self._timeout)
        except (TimeoutError, OSError, EOFError, httptools.HttpParserError) as exc:
            logger.info("receipt POST failed: %s", type(exc).__name__)
            return "retry"
        if 200 <= answer.status < 300:
            return "sent"
        return "retry" if answer.status >= 500 or answer.status == 429 else "refused"

    def _pool(self, parts: SplitResult) -> http1.Pool:
        assert self._pools is not None, "ReceiptSender.start() was not awaited"
        tls = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if tls else 80)
        pool = self._pools.get((parts.scheme, host, port))
        if pool is None:
            pool = self._pools[(parts.scheme, host, port)] = http1.Pool(
                host, port, tls=ssl.create_default_context() if tls else None,
                server_hostname=host if tls else None, size=64,
                connect_timeout=min(self._timeout, 3.0),
            )  # fmt: skip
        return pool


def _receipt(carrier_id: str, status: str) -> Receipt:
    return {
        "carrier_id": carrier_id,
        "status": status,
        "err": ERROR_CODES.get(status, "000"),
        "done_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
