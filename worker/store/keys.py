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
  inbox:seq            counter: names entries in the order requests came
Campaigns:
  batch:{id}           hash: the batch (counts, callback URL, its pending callback event)
  batch:{id}:ids       list: the batch's message ids, in request order
Inbound (MO) messages (`worker.mo`, `worker.store.mo`):
  mo:{id}              hash: the MO (from, to, text, carrier, owner) and its webhook's delivery
  mo:key:{key id}      sorted set (all scores 0): the key's MO ids, by id (time-ordered);
                       `-` holds the MOs no key owns
  mo:key:{key id}:to:{number}  the same, for MOs sent to one of the key's numbers
  mo:parts:{carrier}:{from}:{to}:{ref}:{total}  hash: parts of a multipart MO (`{seq}` -> text)
  mo:seen:{carrier}:{carrier id}  string: the MO stored for a carrier's id (duplicates)
  mo:watch             sorted set: MO ids whose webhook is due or in flight, by when it must
                       have moved (the reconciler routes it again)
  mo:dead              sorted set: MO ids whose webhook was dead-lettered, by when
  mo:number:{number}   hash {key_id, mo_url}: which key owns MOs sent to a number (`*`: any
                       number no key owns)
  key:{key id}:numbers set: the numbers a key owns
Opt-outs (`worker.optouts`):
  optout:{key id}      set: numbers that opted out of the key's messages (`*`: of everyone's)
Batch callbacks (`worker.batch_progress`):
  batches:watch        sorted set: batch ids with a callback, by when they are next checked
  batches:watch:lock   string: the watcher that checks them (one at a time)
Tasks for later (`worker.queueing`, `worker.scheduler`):
  schedule             sorted set: `{uuid}|{json task}`, by when due (ms)
  schedule:inflight    sorted set: entries the scheduler popped and is publishing
  scheduler:lock       string: the scheduler that works (one at a time)
Carrier receipts that matched nothing (`worker.inbound`):
  carrier-receipts:unknown  list: the latest of them, capped
  cid-parked:counts    hash: receipts parked per minute (the parking cap)
Carriers (`worker.carriers.registry`, `worker.carriers.routing`):
  carrier:{name}:breaker  the carrier's circuit breaker (`worker.breaker`)
  carrier:{name}:rate     its request rate (`worker.ratelimit`)
  carrier:{name}:slots    its concurrent requests (`worker.ratelimit`)
  carrier-tries:{client ref}  the carriers a segment was offered to (failover)
SMPP connectors (`worker.smpp.queue`):
  smpp:{carrier}:out:{lane}          stream: PDUs to write, per lane
  smpp:{carrier}:written             hash: entries written, waiting for their answer
  smpp:{carrier}:alive:{consumer}    string: a live connector (expiring)
API keys (`worker.keys`, `worker.quotas`, `producer.idempotency`):
  keys                 set: every key id
  key:{key id}         hash: the key's record
  keyhash:{sha256}     string: the key id of a presented key
  key:{key id}:rate    the key's rate (GCRA arrival time, µs)
  key:{key id}:daily:{day}   messages counted on UTC day number `day`
  idem:{key id}:{sha256}     an Idempotency-Key's first reply
OTP (`worker.otp`):
  otp:{challenge id}   hash: the challenge
  otp:active:{key id}:{purpose}:{to}    the pending challenge of a number and purpose
  otp:cooldown:{key id}:{purpose}:{to}  the resend cooldown
  otp:limit:{kind}:{subject}, otp:ceiling:{kind}:{subject}  send limits (the key's own,
                       and shared by every key)
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
INBOX_SEQ_KEY = f"{PREFIX}inbox:seq"


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


MO_WATCH_KEY = f"{PREFIX}mo:watch"
MO_DEAD_KEY = f"{PREFIX}mo:dead"


def mo_key(mo_id: str) -> str:
    return f"{PREFIX}mo:{mo_id}"


def mo_index_key(key_id: str, to: str = "") -> str:
    """The MO ids of a key (`-`: no owner), or of one of its numbers."""
    return f"{PREFIX}mo:key:{key_id}" + (f":to:{to}" if to else "")


def mo_parts_key(carrier: str, sender: str, recipient: str, ref: int, total: int) -> str:
    return f"{PREFIX}mo:parts:{carrier}:{sender}:{recipient}:{ref}:{total}"


def mo_seen_key(carrier: str, carrier_id: str) -> str:
    return f"{PREFIX}mo:seen:{carrier}:{carrier_id}"


def mo_number_key(number: str) -> str:
    return f"{PREFIX}mo:number:{number}"


def key_numbers_key(key_id: str) -> str:
    return f"{PREFIX}key:{key_id}:numbers"


def optout_key(owner: str) -> str:
    """The opt-out list of an API key, or with `*` the deployment's."""
    return f"{PREFIX}optout:{owner}"


def batch_ids_key(batch_id: str) -> str:
    """The batch's message ids, in request order."""
    return f"{PREFIX}batch:{batch_id}:ids"


BATCH_WATCH_KEY = f"{PREFIX}batches:watch"
BATCH_WATCH_LOCK_KEY = f"{PREFIX}batches:watch:lock"
SCHEDULE_KEY = f"{PREFIX}schedule"
SCHEDULE_INFLIGHT_KEY = f"{PREFIX}schedule:inflight"
UNKNOWN_RECEIPTS_KEY = f"{PREFIX}carrier-receipts:unknown"
PARKED_COUNTS_KEY = f"{PREFIX}cid-parked:counts"


def carrier_key_prefix(name: str) -> str:
    """A carrier's breaker, rate and slots are `{prefix}:breaker`, `:rate`, `:slots`."""
    return f"{PREFIX}carrier:{name}"


def breaker_key(name: str) -> str:
    return f"{carrier_key_prefix(name)}:breaker"


BREAKER_PATTERN = breaker_key("*")


def carrier_of_breaker_key(key: str) -> str:
    """The carrier name in a `breaker_key`."""
    return key.removeprefix(carrier_key_prefix("")).removesuffix(":breaker")


def carrier_tries_key(client_ref: str) -> str:
    return f"{PREFIX}carrier-tries:{client_ref}"


def smpp_stream_key(carrier: str, lane: str) -> str:
    return f"{PREFIX}smpp:{carrier}:out:{lane}"


def smpp_written_key(carrier: str) -> str:
    return f"{PREFIX}smpp:{carrier}:written"


def smpp_alive_key(carrier: str, consumer: str) -> str:
    return f"{PREFIX}smpp:{carrier}:alive:{consumer}"


def smpp_ref_key(stream: str, ref: str) -> str:
    """The marker of a segment queued on `stream` (`smpp_stream_key`), in the stream's hash
    slot: the same segment queued again gets its first entry back."""
    return f"{PREFIX}smpp:{{{stream}}}:ref:{ref}"


API_KEYS_KEY = f"{PREFIX}keys"


def api_key_key(key_id: str) -> str:
    """An API key's record."""
    return f"{PREFIX}key:{key_id}"


def api_key_hash_key(digest: str) -> str:
    """The key id of a presented key, by its SHA-256."""
    return f"{PREFIX}keyhash:{digest}"


def api_key_rate_key(key_id: str) -> str:
    return f"{api_key_key(key_id)}:rate"


def api_key_daily_key(key_id: str, day: int) -> str:
    return f"{api_key_key(key_id)}:daily:{day}"


def idempotency_record_key(key_id: str, digest: str) -> str:
    """An Idempotency-Key's first reply, by the Idempotency-Key's SHA-256."""
    return f"{PREFIX}idem:{key_id}:{digest}"


NO_IDEMPOTENCY_KEY = f"{PREFIX}idem:-"  # stands in for a call without one (never read)


def otp_challenge_key(challenge_id: str) -> str:
    return f"{PREFIX}otp:{challenge_id}"


def otp_active_key(key_id: str, purpose: str, to: str) -> str:
    return f"{PREFIX}otp:active:{key_id}:{purpose}:{to}"


def otp_cooldown_key(key_id: str, purpose: str, to: str) -> str:
    return f"{PREFIX}otp:cooldown:{key_id}:{purpose}:{to}"


def otp_limit_key(kind: str, subject: str, *, shared: bool = False) -> str:
    """A send limit of OTP codes: the key's own, or (`shared`) every key's ceiling."""
    return f"{PREFIX}otp:{'ceiling' if shared else 'limit'}:{kind}:{subject}"


OTP_NO_COOLDOWN_KEY = f"{PREFIX}otp:limit:none"  # stands in for a send without one (never read)
