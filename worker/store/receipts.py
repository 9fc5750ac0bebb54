"""The store's side of client receipts: endpoint queues, claims, settlements, endpoint health.

A receipt is one message's report at one level (`{id}:{level}`); its bookkeeping lives in the
message hash as `rcpt:{level}:*` fields: `state` (`contract.ReceiptState`), `snap` (its
content, fixed when it opened), `seq`, `attempts`, `lease`, `not_before`, `why` (what the last
failed attempt met), `first_attempt_at`, `base` (attempts before a replay). Receipts wait in
their endpoint's queue (`worker.store.keys`) until a drain of that endpoint takes them; every
step is one Lua script (`lua/*.lua`), batched for many receipts in one round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import orjson
import redis

from worker.contract import RECEIPT_DONE, ReceiptState
from worker.store import lua_scripts
from worker.store.keys import (
    COUNTERS_KEY,
    DEAD_LETTER_KEY,
    RECEIPT_WATCH_KEY,
    batch_key,
    endpoint_health_key,
    endpoint_queue_key,
    endpoint_ring_key,
    events_key,
    message_key,
    segments_key,
)
from worker.store.mo import MoStore

Client = redis.Redis | redis.client.Pipeline
# A planned drain's flag outlives its time by this much (ms): if its task is lost, the next
# receipt routed to the endpoint plans a new one.
RING_SLACK_MS = 30_000
# An endpoint's health record is forgotten this long after its last failure (ms).
HEALTH_TTL_MS = 10 * 24 * 3600 * 1000
ROUTING_FIELDS = ("dlr_url", "dlr_method", "dlr_batch", "key_id")
BATCH_EVENT_FIELDS = ("callback_url", "key_id", "cb:event", "cb:event_sig")


def receipt_field(level: int | str, name: str) -> str:
    """A receipt's field in its message's hash: `rcpt:{level}:{name}`."""
    return f"rcpt:{level}:{name}"


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """Where one receipt level stands, read from its message's hash (`None`: never opened)."""

    state: ReceiptState | None
    attempts: int = 0
    seq: int | None = None
    not_before: int | None = None  # when its next attempt is due (ms)
    why: str | None = None  # what its last failed attempt met
    lease: int = 0  # until when the attempt that holds it may run (ms)

    @classmethod
    def of(cls, fields: Mapping[str, str], level: int | str) -> ReceiptRecord:
        def get(name: str) -> str | None:
            return fields.get(receipt_field(level, name)) or None

        state, seq, not_before = get("state"), get("seq"), get("not_before")
        return cls(
            state=ReceiptState(state) if state else None,
            attempts=int(get("attempts") or 0),
            seq=int(seq) if seq else None,
            not_before=int(not_before) if not_before else None,
            why=get("why"),
            lease=int(get("lease") or 0),
        )

    @property
    def done(self) -> bool:
        return self.state in RECEIPT_DONE


class Routing(NamedTuple):
    """Where a message's receipts go: what `ReceiptRouter` needs of the message."""

    dlr_url: str
    dlr_method: str
    dlr_batch: bool
    key_id: str


class Placement(NamedTuple):
    """One receipt to put in an endpoint's queue: due then, a drain not before `start`."""

    endpoint: str
    member: str
    due: int
    start: int


class Take(NamedTuple):
    """What a drain's take found (`lua/endpoint_take.lua`): `items`, `idle`, `later` (at),
    `backoff` (until), `empty` or `busy`."""

    state: str
    items: tuple[str, ...] = ()
    at: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """A receipt taken for one delivery attempt, with everything the attempt needs."""

    message_id: str
    level: int
    seq: int
    attempt: int
    snapshot: Mapping[str, Any]
    dlr_url: str
    dlr_method: str
    dlr_batch: bool
    key_id: str
    to: str
    sender: str
    client_ref: str
    first_attempt_at: int | None
    base: int


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """A campaign's pending callback event (`batch.progress`, `batch.completed`)."""

    batch_id: str
    url: str
    key_id: str
    event_id: str
    body: Mapping[str, Any]
    signature: str  # the counters it reports, as JSON: what `callback_sent` remembers


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one attempt of a claimed receipt came to (`lua/receipt_settle.lua`)."""

    message_id: str
    level: int
    outcome: str  # sent, gone, dead, retry
    event: Mapping[str, Any]
    due: int = 0  # retry: when
    why: str = ""  # retry: what the attempt met
    clear_why: bool = False  # done after earlier failures: forget their why


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """How an endpoint has been answering: consecutive failures, a backoff, the last reason."""

    failures: int = 0
    backoff_until: int = 0
    backoffs: int = 0  # consecutive backoffs (each one longer)
    reason: str = ""
    origin: str = ""
    since: int = 0  # first failure of the current run of failures (ms)

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> EndpointHealth:
        return cls(
            failures=int(data.get("failures") or 0),
            backoff_until=int(data.get("backoff_until") or 0),
            backoffs=int(data.get("backoffs") or 0),
            reason=data.get("reason", ""),
            origin=data.get("origin", ""),
            since=int(data.get("since") or 0),
        )

    def to_hash(self) -> dict[str, str]:
        return {
            "failures": str(self.failures),
            "backoff_until": str(self.backoff_until),
            "backoffs": str(self.backoffs),
            "reason": self.reason,
            "origin": self.origin,
            "since": str(self.since),
        }


class ReceiptStore:
    """Typed access to receipt queues and receipt state; one per process, thread-safe."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._route = lua_scripts.register(client, "endpoint_route")
        self._take = lua_scripts.register(client, "endpoint_take")
        self._claim = lua_scripts.register(client, "receipt_claim", "snapshot")
        self._settle = lua_scripts.register(client, "receipt_settle")
        self._event_sent = lua_scripts.register(client, "batch_event_sent")
        self._release = lua_scripts.register(client, "endpoint_release")
        self.mo = MoStore(client)  # inbound messages' webhooks travel the same queues

    # -- routing ----------------------------------------------------------------------------
    def routing(self, message_ids: Sequence[str]) -> list[Routing | None]:
        """Where each message's receipts go (None for a message that no longer exists)."""
        replies = self._each(
            lambda client, message_id: client.hmget(message_key(message_id), ROUTING_FIELDS),
            [(message_id,) for message_id in message_ids],
        )
        return [
            Routing(url, method or "POST", batch == "1", key_id or "") if url else None
            for url, method, batch, key_id in replies
        ]

    def place(self, placements: Sequence[Placement], now: int, batch_max: int = 0) -> list[int]:
        """Put each receipt in its endpoint's queue; for each, the time a drain of its endpoint
        must be started at (0: one is planned or running already)."""
        items = [(placement, now, batch_max) for placement in placements]
        return [int(at) for at in self._each(self._place, items)]

    def _place(self, client: Client, p: Placement, now: int, batch_max: int) -> Any:
        return self._route(
            keys=[endpoint_queue_key(p.endpoint), endpoint_ring_key(p.endpoint),
                  endpoint_health_key(p.endpoint)],
            args=[p.member, p.due, now, p.start, batch_max, RING_SLACK_MS],
            client=client,
        )  # fmt: skip

    # -- draining ---------------------------------------------------------------------------
    def take(
        self,
        endpoint: str,
        token: str,
        now: int,
        limit: int,
        lease_ms: int,
        *,
        keep: bool,
        not_before: int = 0,
    ) -> Take:
        """The receipts of `endpoint` due now, for the drain `token` (`lua/endpoint_take.lua`);
        with nothing taken, the next drain starts at `not_before` at the earliest."""
        reply = self._take(
            keys=[endpoint_queue_key(endpoint), endpoint_ring_key(endpoint),
                  endpoint_health_key(endpoint)],
            args=[token, now, limit, lease_ms, "1" if keep else "0", RING_SLACK_MS, not_before],
        )  # fmt: skip
        state = str(reply[0])
        if state == "items":
            return Take(state, tuple(str(member) for member in reply[1]))
        if state in ("later", "backoff"):
            return Take(state, at=int(reply[1]))
        return Take(state)

    def hold(self, endpoint: str, token: str, lease_ms: int) -> bool:
        """Renew the drain `token`'s hold on `endpoint` for `lease_ms` (0: give it up);
        False if it no longer held it."""
        return bool(self._release(keys=[endpoint_ring_key(endpoint)], args=[token, lease_ms]))

    def claim(
        self, refs: Sequence[tuple[str, int]], now: int, lease_ms: int
    ) -> list[Claim | int]:
        """Claim each `(message id, level)` for an attempt: a `Claim`, or 0 (done, taken, not
        due) or -1 (a level 2 waiting for its level 1), in order, in one round trip."""
        replies = self._each(self._claim_one, [(m, level, now, lease_ms) for m, level in refs])
        return [_claim(ref, reply) for ref, reply in zip(refs, replies, strict=True)]

    def _claim_one(self, client: Client, message_id: str, level: int, now: int, lease: int) -> Any:
        return self._claim(
            keys=[message_key(message_id), segments_key(message_id), RECEIPT_WATCH_KEY],
            args=[level, now, lease],
            client=client,
        )

    def settle(self, settlements: Sequence[Settlement], now: int) -> list[int]:
        """Record each attempt's outcome; per receipt 2 when it released a waiting level 2,
        1 when recorded, 0 when the attempt had lost its claim or the message is gone."""
        items = [(settlement, now) for settlement in settlements]
        return [int(answer) for answer in self._each(self._settle_one, items)]

    def _settle_one(self, client: Client, s: Settlement, now: int) -> Any:
        return self._settle(
            keys=[message_key(s.message_id), RECEIPT_WATCH_KEY, events_key(s.message_id),
                  DEAD_LETTER_KEY],
            args=[s.level, s.outcome, now, orjson.dumps({"at": now, **s.event}), s.due, s.why,
                  "1" if s.clear_why else "0"],
            client=client,
        )  # fmt: skip

    # -- batch callback events --------------------------------------------------------------
    def put_batch_event(
        self, batch_id: str, event_id: str, body: Mapping[str, Any], signature: str
    ) -> None:
        """Make `body` the batch's pending callback event (replacing an undelivered one)."""
        self.redis.hset(
            batch_key(batch_id),
            mapping={"cb:event": orjson.dumps({"id": event_id, "body": body}).decode(),
                     "cb:event_sig": signature},
        )  # fmt: skip

    def batch_events(self, batch_ids: Sequence[str]) -> list[BatchEvent | None]:
        """Each batch's pending callback event (None: none pending, or no such batch)."""
        replies = self._each(
            lambda client, batch_id: client.hmget(batch_key(batch_id), BATCH_EVENT_FIELDS),
            [(batch_id,) for batch_id in batch_ids],
        )
        events: list[BatchEvent | None] = []
        for batch_id, (url, key_id, raw, signature) in zip(batch_ids, replies, strict=True):
            if not (url and raw and signature):
                events.append(None)
                continue
            event = orjson.loads(raw)
            events.append(BatchEvent(batch_id, url, key_id or "", event["id"], event["body"],
                                     signature))  # fmt: skip
        return events

    def batch_events_sent(self, events: Sequence[BatchEvent]) -> None:
        """Remember each delivered event (unless a newer one replaced it meanwhile)."""
        self._each(
            lambda client, event: self._event_sent(
                keys=[batch_key(event.batch_id)], args=[event.signature], client=client
            ),
            [(event,) for event in events],
        )

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the system-wide counters (`Store.counters`)."""
        self.redis.hincrby(COUNTERS_KEY, name, amount)

    # -- endpoint health --------------------------------------------------------------------
    def health(self, endpoint: str) -> EndpointHealth:
        return read_health(self.redis, endpoint)

    def set_health(self, endpoint: str, health: EndpointHealth | None) -> None:
        """Record an endpoint's health; None forgets it (it answers well)."""
        key = endpoint_health_key(endpoint)
        if health is None:
            self.redis.delete(key)
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=cast(dict[Any, Any], health.to_hash()))
        pipe.pexpire(key, HEALTH_TTL_MS)
        pipe.execute()

    def _each(self, call: Callable[..., Any], items: Sequence[Sequence[Any]]) -> list[Any]:
        """`call(client, *item)` for every item in one round trip (`lua_scripts.each`)."""
        return lua_scripts.each(self.redis, call, items)


def read_health(client: redis.Redis, endpoint: str) -> EndpointHealth:
    """An endpoint's health (a healthy one has no record: all zeros)."""
    raw = cast(dict[str, str], client.hgetall(endpoint_health_key(endpoint)))
    return EndpointHealth.from_hash(raw)


def _claim(ref: tuple[str, int], reply: Any) -> Claim | int:
    if not isinstance(reply, list):
        return int(reply)
    seq, attempt, snap, url, method, batch, key_id, to, sender, client_ref, first, base = reply
    return Claim(
        message_id=ref[0],
        level=int(ref[1]),
        seq=int(seq),
        attempt=int(attempt),
        snapshot=orjson.loads(snap),
        dlr_url=str(url),
        dlr_method=str(method or "POST"),
        dlr_batch=batch == "1",
        key_id=str(key_id),
        to=str(to),
        sender=str(sender),
        client_ref=str(client_ref),
        first_attempt_at=int(first) if first else None,
        base=int(base or 0),
    )
