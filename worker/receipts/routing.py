"""Routing: a client receipt goes into its endpoint's queue, and a drain of that endpoint is
started (now, or when its next receipt is due) unless one is planned or running already.

Everything that makes a receipt due routes it here: the sender and the carrier-receipt intake
when they open one, closing a level 1 that releases its level 2, a failed attempt's retry, the
reconciler and `smsq dlr replay` (through the `sms.dlr.post` task). A drain is the
`sms.dlr.drain` task, run by the receipt engine of whichever `dlr` worker takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from worker.clock import now_ms
from worker.contract import DRAIN_RECEIPTS, Queue
from worker.mo.webhook import member as mo_member
from worker.queueing import Publisher
from worker.receipts.channels import channel_for
from worker.receipts.config import EngineConfig
from worker.receipts.endpoints import endpoint_for
from worker.store.receipts import Placement, ReceiptStore, Routing

# A drain due within this many ms is started now.
RING_NOW_MS = 5


class ReceiptRouter:
    """Puts receipts in their endpoints' queues; thread-safe, one per process."""

    def __init__(
        self,
        store: ReceiptStore,
        publisher: Publisher,
        config: EngineConfig,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.config = config
        self.clock = clock

    def route(
        self,
        refs: Sequence[tuple[str, int]],
        *,
        routing: Mapping[str, Routing] | None = None,
        dues: Sequence[int] | None = None,
    ) -> int:
        """Route each `(message id, level)`, due now (or at `dues[i]`, ms); `routing`: where
        their messages' receipts go, when the caller knows (read from the store otherwise).
        Returns how many were placed (a message that no longer exists is skipped)."""
        if not refs:
            return 0
        now = self.clock()
        known = dict(routing or {})
        missing = list(dict.fromkeys(m for m, _ in refs if m not in known))
        if missing:
            known.update(
                (m, r) for m, r in zip(missing, self.store.routing(missing), strict=True) if r
            )
        placements = []
        for index, (message_id, level) in enumerate(refs):
            where = known.get(message_id)
            if where is None:
                continue
            due = dues[index] if dues is not None else now
            placements.append(self._placement(message_id, level, where, max(due, now), now))
        rings: dict[str, tuple[int, bool]] = {}
        for placement, at in zip(
            placements, self.store.place(placements, now, self.config.batch_max), strict=True
        ):
            if at:
                earliest, batching = rings.get(placement.endpoint, (at, False))
                batching = batching or placement.start > placement.due
                rings[placement.endpoint] = (min(at, earliest), batching)
        for endpoint, (at, batching) in rings.items():
            self.ring(endpoint, at, now, batching=batching)
        return len(placements)

    def _placement(
        self, message_id: str, level: int, where: Routing, due: int, now: int
    ) -> Placement:
        endpoint = endpoint_for(where.key_id, where.dlr_url)
        start = due
        if channel_for(where.dlr_method, batch=where.dlr_batch).batches:
            start = max(due, now + self.config.batch_window_ms)  # gather a batch first
        return Placement(endpoint.id, f"{message_id}:{level}", due, start)

    def route_event(self, batch_id: str, url: str, key_id: str) -> None:
        """Put a campaign's pending callback event (`ReceiptStore.put_batch_event`) in the
        queue of its endpoint: it travels like a receipt, with the same isolation."""
        self._route_member(f"b:{batch_id}", url, key_id)

    def route_mo(self, mo_id: str, url: str, key_id: str, due: int | None = None) -> None:
        """Put an inbound message's webhook (`worker.mo.webhook`) in the queue of its
        endpoint, due now or at `due` (ms): it travels like a receipt."""
        self._route_member(mo_member(mo_id), url, key_id, due)

    def _route_member(self, member: str, url: str, key_id: str, due: int | None = None) -> None:
        now = self.clock()
        endpoint = endpoint_for(key_id, url).id
        at_ms = max(now, due or now)
        (at,) = self.store.place([Placement(endpoint, member, at_ms, at_ms)], now)
        if at:
            self.ring(endpoint, at, now)

    def ring(
        self, endpoint: str, at: int, now: int | None = None, *, batching: bool = False
    ) -> None:
        """Start a drain of `endpoint` at `at` (ms): now, or through the durable schedule.
        `batching`: its receipts travel in `dlr-batch` POSTs (the drain takes whole batches)."""
        delay_ms = at - (self.clock() if now is None else now)
        args = [endpoint, 1] if batching else [endpoint]
        if delay_ms <= RING_NOW_MS:
            self.publisher.publish(DRAIN_RECEIPTS, args, Queue.DLR)
        else:
            self.publisher.publish_later(DRAIN_RECEIPTS, args, Queue.DLR, delay_ms / 1000)
