"""Client receipts: from a carrier's report to a signed request to the client's `dlr-url`.

One receipt per message per level (1: the carrier took it, 2: the handset outcome), never per
segment. The path, one module per step:

- `routing`   a receipt that becomes due (opened, released, retried, replayed) goes into its
              endpoint's queue, and a drain of that endpoint is started unless one runs;
- `engine`    a `dlr` worker's receipt engine drains endpoints concurrently, fairly and
              within hard deadlines, and records every outcome;
- `payload`   what a receipt says: fixed when its event happened (a snapshot), the same on
              every attempt and replay;
- `channels`  how it travels: JSON POST, GET query, or batched JSON POST (`dlr-batch`);
- `client`    HTTP through the SSRF guard, pinned, kept alive, signed (Standard Webhooks);
- `endpoints` an endpoint (an API key's dlr-url origin) and its health: failing ones back off;
- `retries`   the retry schedule, dead letters and `smsq dlr replay`.

The store's side (queues, claims, Lua) is `worker.store.receipts`; docs/receipts.md tells the
whole story.
"""

from worker.receipts.payload import event_id, status_word
from worker.receipts.retries import (
    GIVE_UP_AFTER_MS,
    RETRY_SCHEDULE_SECONDS,
    dead_letters,
    replay,
)

__all__ = [
    "GIVE_UP_AFTER_MS",
    "RETRY_SCHEDULE_SECONDS",
    "dead_letters",
    "event_id",
    "replay",
    "status_word",
]
