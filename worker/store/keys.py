"""Every Redis key the store writes, built in one place (all under `smsq:`).

Per message (all of one message's keys share its id):
  msg:{id}             hash: the message (`Message` fields), status, receipt bookkeeping
                       (`rcpt:{level}:*`, see `worker.store.receipts`)
  msg:{id}:seg         hash: per-segment fields `{seq}:status`, `{seq}:carrier_id`, ...
  msg:{id}:events      list: JSON events with UTC millisecond timestamps
Per API key:
  msgs:{key_id}        sorted set (all scores 0): the key's message ids, read as a
                       lexicographic range (ids begin with their creation time), `GET /sms`
Watch lists (sorted sets, scored by when progress is due, ms) for the reconciler:
  watch:submit, watch:delivery, watch:receipt (`{id}:{level}`)
Client receipts, per endpoint (an API key's dlr-url origin, `worker.receipts.endpoints`):
  dlr:q:{endpoint}       sorted set: `{id}:{level}` waiting to be delivered, by when due
  dlr:q:{endpoint}:ring  string: a drain is planned (its time, ms) or running (`run:{token}`)
  dlr:ep:{endpoint}      hash: the endpoint's health (failures, backoff, last reason)
  dlr:dead             sorted set: dead-lettered `{id}:{level}`, by when
Carrier receipt requests, kept until applied (`worker.store.inbox`):
  inbox                hash: entry -> JSON [carrier name, request as received]
  watch:inbox          sorted set: entry -> when due (now, or when a drain's lease ends)
  inbox:ring           string: a drain is planned (its time, ms) or running (`run:{token}`)
Campaigns:
  batch:{id}           hash: the batch (counts, callback URL, its pending callback event)
  batch:{id}:ids       list: the batch's message ids, in request order
"""

from __future__ import annotations

PREFIX = "smsq:"
SUBMIT_WATCH_KEY = f"{PREFIX}watch:submit"
DELIVERY_WATCH_KEY = f"{PREFIX}watch:delivery"
RECEIPT_WATCH_KEY = f"{PREFIX}watch:receipt"
DEAD_LETTER_KEY = f"{PREFIX}dlr:dead"
COUNTERS_KEY = f"{PREFIX}counters"


SCHEDULER_LOCK_KEY = f"{PREFIX}scheduler:lock"  # held by the scheduler that works
INBOX_KEY = f"{PREFIX}inbox"
INBOX_WATCH_KEY = f"{PREFIX}watch:inbox"
INBOX_RING_KEY = f"{PREFIX}inbox:ring"


def message_key(message_id: str) -> str:
    return f"{PREFIX}msg:{message_id}"


def key_messages_key(key_id: str) -> str:
    """An API key's messages (`GET /sms`, `smsq keys revoke --cancel-pending`)."""
    return f"{PREFIX}msgs:{key_id}"


def segments_key(message_id: str) -> str:
    return f"{PREFIX}msg:{message_id}:seg"


def events_key(message_id: str) -> str:
    return f"{PREFIX}msg:{message_id}:events"


def carrier_index_key(carrier: str, carrier_id: str) -> str:
    return f"{PREFIX}cid:{carrier}:{carrier_id}"


def parked_receipts_key(carrier: str, carrier_id: str) -> str:
    return f"{PREFIX}cid-parked:{carrier}:{carrier_id}"


def concat_key_prefix() -> str:
    """The per-recipient concatenation counter is `{prefix}{to}`."""
    return f"{PREFIX}concat:"


def endpoint_queue_key(endpoint: str) -> str:
    return f"{PREFIX}dlr:q:{endpoint}"


def endpoint_ring_key(endpoint: str) -> str:
    return f"{PREFIX}dlr:q:{endpoint}:ring"


def endpoint_health_key(endpoint: str) -> str:
    return f"{PREFIX}dlr:ep:{endpoint}"


def batch_key(batch_id: str) -> str:
    return f"{PREFIX}batch:{batch_id}"
