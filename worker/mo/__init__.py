"""Inbound (MO) messages: from a carrier to the owning key's `mo-url`, and opt-outs.

- `intake`    take one MO (or a part): reassemble, deduplicate, store, apply keywords, route
              its webhook (`MoIntake`; `accept` below for callers with a Redis client only);
- `formats`   the HTTP forms carriers send MOs in (`/carriers/{name}/mo`): Kannel's
              sms-service GET, Twilio's inbound webhook, the generic JSON of `sim` / `http`;
- `owners`    which key owns an MO (the number it was sent to), and where its webhook goes;
- `keywords`  STOP / START and their kin, per language;
- `webhook`   the webhook's body and how its attempts settle, in the receipt engine.

Opt-out lists and the check sends make against them are `worker.optouts`; the store's side is
`worker.store.mo`; docs/inbound.md tells the whole story.
"""

from __future__ import annotations

import threading
import weakref

import redis

_lock = threading.Lock()
_intakes: weakref.WeakKeyDictionary[redis.Redis, object] = weakref.WeakKeyDictionary()


def accept(
    client: redis.Redis,
    carrier_name: str,
    sender: str,
    recipient: str,
    text: str,
    *,
    udh: bytes = b"",
    received_at: int,
    carrier_id: str = "",
    mo_id: str = "",
) -> str | None:
    """Take one inbound message from carrier `carrier_name`: `sender` (the handset) sent
    `text` to `recipient` (our number) at `received_at` (ms); `udh` when it is a part of a
    multipart MO, `carrier_id` when the carrier names it (repeats are recognised).

    Returns the stored MO's id, or None for a part whose message still waits for its other
    parts. Webhooks are started through the durable schedule (the scheduler publishes within
    ~0.1 s), so `client` is all this needs. Thread-safe; one intake per client is kept."""
    from worker.mo.intake import MoIntake, ScheduledPublisher  # here: keep `worker.mo` light

    with _lock:
        intake = _intakes.get(client)
        if intake is None:
            intake = _intakes[client] = MoIntake.build(client, ScheduledPublisher(client))
    assert isinstance(intake, MoIntake)
    return intake.accept(
        carrier_name, sender, recipient, text,
        udh=udh, received_at=received_at, carrier_id=carrier_id, mo_id=mo_id,
    )  # fmt: skip


__all__ = ["accept"]
