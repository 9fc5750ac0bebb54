"""The store's side of carrier receipts in: the inbox, where each request a carrier made waits
until a drain has applied it (so a crash or a Redis restart loses none), and the ring flag
that keeps one drain at work (`worker.receipts.intake`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
import redis

from worker.store import lua_scripts
from worker.store.keys import INBOX_KEY, INBOX_RING_KEY, INBOX_WATCH_KEY

# A planned drain's flag outlives its time by this much (ms): if its task is lost, the next
# request plans a new one.
RING_SLACK_MS = 30_000


class Lease(NamedTuple):
    """What a drain's lease found (`lua/inbox_lease.lua`): `items`, `idle`, `later` (at),
    `empty` or `busy`; for `items`, each entry with its request (None: gone meanwhile)."""

    state: str
    entries: tuple[tuple[str, tuple[str, dict[str, Any]] | None], ...] = ()
    at: int = 0


class Inbox:
    """Carrier receipt requests waiting to be applied; one per process, thread-safe."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._put = lua_scripts.register(client, "inbox_put")
        self._lease = lua_scripts.register(client, "inbox_lease")
        self._ring = lua_scripts.register(client, "inbox_ring")

    def put(self, entry: str, carrier: str, request: dict[str, Any], now: int) -> bool:
        """Keep a request; True when a drain must be started for it (none runs)."""
        return bool(
            self._put(
                keys=[INBOX_KEY, INBOX_WATCH_KEY, INBOX_RING_KEY],
                args=[entry, orjson.dumps([carrier, request]), now, RING_SLACK_MS],
            )
        )

    def lease(
        self, token: str, now: int, limit: int, lease_ms: int, hold_ms: int, *, keep: bool
    ) -> Lease:
        """The requests due now, for the drain `token`, due again after `lease_ms`."""
        reply = self._lease(
            keys=[INBOX_KEY, INBOX_WATCH_KEY, INBOX_RING_KEY],
            args=[token, now, limit, lease_ms, "1" if keep else "0", hold_ms, RING_SLACK_MS],
        )
        state = str(reply[0])
        if state == "items":
            entries = tuple(
                (str(entry), _request(raw)) for entry, raw in zip(reply[1], reply[2], strict=True)
            )
            return Lease(state, entries)
        if state == "later":
            return Lease(state, at=int(reply[1]))
        return Lease(state)

    def done(self, entries: Sequence[str]) -> None:
        """The entries were applied: forget them (one round trip)."""
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(INBOX_KEY, *entries)
        pipe.zrem(INBOX_WATCH_KEY, *entries)
        pipe.execute()

    def ring(self, now: int, stale_before: int) -> bool:
        """Plan a drain for requests left overdue, unless one runs, or one is planned since
        `stale_before` (ms) at least; True when the caller must start it."""
        return bool(
            self._ring(keys=[INBOX_RING_KEY], args=[now, stale_before, RING_SLACK_MS])
        )


def _request(raw: str | bytes | None) -> tuple[str, dict[str, Any]] | None:
    if not raw:
        return None
    carrier, request = orjson.loads(raw)
    return str(carrier), request
