"""Tasks a dead worker held, put back in their queues long before Celery's visibility timeout.

On Redis, kombu keeps every task a worker has taken but not acknowledged in the `unacked`
hash (indexed by delivery time in `unacked_index`) and only puts it back after the visibility
timeout, an hour here (`worker.celery_app`), so that no long countdown runs twice. A worker
killed with SIGKILL, or crashed by kombu while Redis restarts, leaves its tasks there: send
tasks the reconciler recovers from the store anyway, but a carrier receipt handed to such a
task would wait an hour. The reconciler therefore runs kombu's own restore with a visibility
timeout of `after` seconds: every smsq task is idempotent, so a task that was merely still
waiting in a live worker's prefetch buffer for that long runs twice, harmlessly.
"""

from __future__ import annotations

import logging
from time import time
from typing import Any

from kombu import Connection

log = logging.getLogger(__name__)

UNACKED_INDEX = "unacked_index"  # kombu's Redis transport: delivery tag -> delivery time
BATCH = 1000


class Redelivery:
    """Callable: put back what was delivered more than `after` seconds ago and never acked."""

    def __init__(
        self, broker_url: str, after: float, transport_options: dict[str, Any] | None = None
    ) -> None:
        """`transport_options`: what the broker URL needs besides (e.g. Redis Sentinel's
        `master_name`, from `worker.redis_urls.celery_broker`)."""
        self.broker_url = broker_url
        self.after = after
        self.transport_options = transport_options or {}
        self._connection: Connection | None = None

    def __call__(self) -> int:
        """How many tasks were put back in their queues (0 when the broker is unreachable)."""
        connection = self._connection or Connection(
            self.broker_url,
            transport_options={**self.transport_options, "visibility_timeout": self.after},
        )
        self._connection = connection
        try:
            # The Redis transport's channel: its QoS holds kombu's restore.
            channel: Any = connection.default_channel
            with channel.conn_or_acquire() as client:
                due = int(client.zcount(UNACKED_INDEX, "-inf", time() - self.after))
            if due:
                channel.qos.restore_visible(num=BATCH, interval=1)
        except (*connection.connection_errors, *connection.channel_errors) as exc:
            log.warning("redelivery: broker unavailable (%s)", type(exc).__name__)
            self.close()  # a fresh connection next pass
            return 0
        return min(due, BATCH)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None
