"""The simulator's receipt sender: POSTs terminal receipts after a delay, retrying briefly."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import orjson

from worker.simulator.state import SimulatorState

logger = logging.getLogger(__name__)

# SMPP `err:` values the simulator reports with each final state.
ERROR_CODES = {"DELIVRD": "000", "UNDELIV": "001", "EXPIRED": "002"}


class ReceiptSender:
    """Schedules one receipt per accepted segment on one shared `httpx.AsyncClient`."""

    def __init__(
        self,
        state: SimulatorState,
        *,
        delay: float,
        attempts: int,
        timeout: float,
        concurrency: int = 16,
    ) -> None:
        self._state = state
        self._slots = asyncio.Semaphore(concurrency)  # receipt POSTs in flight
        self._delay = delay
        self._attempts = attempts
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 3.0))
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the client (at server start, never at import)."""
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(timeout=self._timeout, limits=limits)

    async def stop(self) -> None:
        """Drop the receipts not yet sent and close the client."""
        await self.cancel_pending()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def cancel_pending(self) -> None:
        """Cancel every scheduled receipt (on reset and shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def schedule(self, url: str, carrier_id: str, status: str, delay: float | None = None) -> None:
        """Send a receipt for `carrier_id` to `url` after `delay` (default: the configured)."""
        wait = self._delay if delay is None else delay
        task = asyncio.create_task(self._deliver(url, carrier_id, status, wait))
        # The loop keeps only weak references to tasks: hold them until they finish.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, carrier_id: str, status: str, delay: float) -> None:
        await asyncio.sleep(delay)
        body = orjson.dumps(
            {
                "carrier_id": carrier_id,
                "status": status,
                "err": ERROR_CODES.get(status, "000"),
                "done_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
        )
        for attempt in range(1, self._attempts + 1):
            async with self._slots:
                outcome = await self._post(url, body)
            if outcome == "sent":
                self._state.receipts_sent += 1
                return
            if outcome == "refused" or attempt == self._attempts:
                break
            await asyncio.sleep(0.1 * 2 ** (attempt - 1))
        self._state.receipts_failed += 1
        logger.warning(
            "receipt dropped", extra={"carrier_id": carrier_id, "host": urlsplit(url).netloc}
        )

    async def _post(self, url: str, body: bytes) -> str:
        """`sent`, `retry` (network error, 5xx, 429) or `refused` (any other answer)."""
        assert self._client is not None, "ReceiptSender.start() was not awaited"
        try:
            response = await self._client.post(
                url, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            logger.info("receipt POST failed: %s", type(exc).__name__)
            return "retry"
        if response.is_success:
            return "sent"
        return "retry" if response.status_code >= 500 or response.status_code == 429 else "refused"
