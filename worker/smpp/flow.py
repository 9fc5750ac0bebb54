"""Flow control of the connector's sends: the rate (`TokenBucket`), a session's window of
unanswered requests (`Window`), and the line of entries waiting for a bind (`ReadyLine`)."""

from __future__ import annotations

import asyncio
import collections
import time

from worker.smpp.queue import Entry


class TokenBucket:
    """`rate` per second with bursts of `burst` (a GCRA in this process); 0 = no limit."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.burst = max(1, burst)
        self._tat = 0.0

    def reserve(self, *, only_now: bool = False) -> float | None:
        """Take the next slot: how long to wait for it (0 = now). With `only_now`, take it
        only if it is free now (else None, nothing taken)."""
        if not self.interval:
            return 0.0
        now = time.monotonic()
        tat = max(self._tat, now) + self.interval
        wait = max(0.0, tat - self.burst * self.interval - now)
        if only_now and wait > 0:
            return None
        self._tat = tat
        return wait


class ReadyLine:
    """Entries in the connector's hands, not yet written: first in, first out; an entry sent
    again goes first."""

    def __init__(self) -> None:
        self._entries: collections.deque[Entry] = collections.deque()
        self._nonempty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def extend(self, entries: list[Entry]) -> None:
        self._entries.extend(entries)
        if self._entries:
            self._nonempty.set()

    def put_front(self, entries: list[Entry]) -> None:
        self._entries.extendleft(reversed(entries))
        if self._entries:
            self._nonempty.set()

    def take(self) -> Entry | None:
        if not self._entries:
            self._nonempty.clear()
            return None
        return self._entries.popleft()

    async def wait(self) -> None:
        while not self._entries:
            self._nonempty.clear()
            await self._nonempty.wait()


class Window:
    """Requests a session may have unanswered: `acquire` waits for a free slot."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._freed = asyncio.Event()

    async def acquire(self) -> None:
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()
        self.free -= 1

    def take(self) -> None:
        """A slot known to be free (`free > 0`)."""
        self.free -= 1

    def release(self, count: int = 1) -> None:
        self.free += count
        self._freed.set()
