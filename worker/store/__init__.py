"""The message store in Redis: the source of truth for every message and segment.

Its keys are built in `worker.store.keys` (the layout is documented there); carrier-id
correlation adds
  cid:{carrier}:{carrier_id}  string `{id}:{seq}`: correlates carrier receipts to segments
  cid-parked:{carrier}:{carrier_id}  list: receipts that came before their carrier id was stored
  concat:{to}        counter for concatenation references per recipient
  counters           hash: totals of rare events (unknown outcomes, stale claims, ...)

Every state change that can race (segment claim, receipt aggregation, receipt ordering) is one
Lua script, so two workers can never both submit a segment or both fire a final receipt; the
same scripts keep the watch lists the reconciler (`worker.reconciler`) works from. Client
receipts' queues, claims and endpoint health are `worker.store.receipts`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import orjson
import redis

from worker.clock import now_ms
from worker.contract import SegmentStatus
from worker.records import AggregateResult, Finished, Message, SegmentState, parse_segments
from worker.store import lua_scripts
from worker.store.keys import (
    COUNTERS_KEY,
    DEAD_LETTER_KEY,
    DELIVERY_WATCH_KEY,
    PREFIX,
    RECEIPT_WATCH_KEY,
    SUBMIT_WATCH_KEY,
    carrier_index_key,
    events_key,
    key_messages_key,
    message_key,
    parked_receipts_key,
    segments_key,
)

__all__ = [
    "COUNTERS_KEY", "DEAD_LETTER_KEY", "DELIVERY_WATCH_KEY", "PREFIX", "RECEIPT_WATCH_KEY",
    "SUBMIT_WATCH_KEY", "AggregateResult", "Finished", "Message", "SegmentState", "Store",
    "carrier_index_key", "events_key", "key_messages_key", "message_key", "new_message_id",
    "parked_receipts_key", "parse_segments", "segments_key",
]  # fmt: skip

CARRIER_INDEX_TTL_SECONDS = 7 * 24 * 3600
CONCAT_COUNTER_TTL_SECONDS = 7 * 24 * 3600
# How long a receipt for a carrier id not yet stored waits for it (`SMSQ_CARRIER_RECEIPTS_PARK_
# SECONDS`): the race between a carrier's answer and storing its id takes seconds, not days.
PARKED_RECEIPT_TTL_SECONDS = 600


def new_message_id(at_ms: int | None = None) -> str:
    """A new message id: 32 lower-case hex characters, time-ordered in its first 12 (the
    creation time in ms, `at_ms` or now)."""
    return f"{now_ms() if at_ms is None else at_ms:012x}{uuid.uuid4().hex[:20]}"


class Store:
    """Typed access to the message store; one per process, thread-safe (redis-py pools)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._scripts = lua_scripts.load(client)

    # -- messages -------------------------------------------------------------------------
    def create(self, message: Message, event: str = "accepted") -> None:
        """Store a new message with its first event (one round trip)."""
        pipe = self.redis.pipeline(transaction=True)
        self.add_create(pipe, message, event)
        pipe.execute()

    def add_create(self, pipe: redis.client.Pipeline, message: Message, event: str) -> None:
        """Queue the writes that create `message` on a pipeline."""
        self.add_create_many(pipe, [message], event)

    def add_create_many(
        self, pipe: redis.client.Pipeline, messages: Sequence[Message], event: str
    ) -> None:
        """Queue the writes that create `messages` (batched ingest): each one's hash and first
        event, then their watch and per-key index entries in one command each."""
        if not messages:
            return
        for message in messages:
            pipe.hset(message_key(message.id), mapping=_fields(message.to_hash()))
            pipe.rpush(events_key(message.id), _event(event, status=str(message.status)))
        now = now_ms()
        pipe.zadd(SUBMIT_WATCH_KEY, {m.id: m.send_at or m.created_at or now for m in messages})
        index: dict[str, dict[str, int]] = {}
        for message in messages:
            index.setdefault(message.key_id, {})[message.id] = 0
        for key_id, ids in index.items():
            pipe.zadd(key_messages_key(key_id), cast(dict[Any, Any], ids))

    def load(self, message_id: str) -> Message | None:
        data = cast(dict[str, str], self.redis.hgetall(message_key(message_id)))
        return Message.from_hash(data) if data else None

    def fields(self, message_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(message_key(message_id)))

    def set_fields(self, message_id: str, values: Mapping[str, str]) -> None:
        self.redis.hset(message_key(message_id), mapping=_fields(dict(values)))

    def add_event(self, message_id: str, event: str, **detail: Any) -> None:
        self.redis.rpush(events_key(message_id), _event(event, **detail))

    def events(self, message_id: str) -> list[dict[str, Any]]:
        raw = cast(list[str], self.redis.lrange(events_key(message_id), 0, -1))
        return [orjson.loads(item) for item in raw]

    def transition(
        self, message_id: str, allowed_from: set[str] | frozenset[str], to: str, **detail: Any
    ) -> bool:
        """Move a message to `to` only from one of `allowed_from`; record an event if it moved."""
        moved = self._scripts.transition(
            keys=_transition_keys(message_id),
            args=[to, _event(to, **detail), now_ms(), *sorted(allowed_from)],
        )
        return bool(moved)

    def transition_many(
        self, message_ids: list[str], allowed_from: frozenset[str], to: str, **detail: Any
    ) -> int:
        """`transition` for many messages in one pipelined round trip; returns how many moved."""
        allowed = sorted(allowed_from)

        def move(client: redis.Redis | redis.client.Pipeline, message_id: str) -> Any:
            return self._scripts.transition(
                keys=_transition_keys(message_id),
                args=[to, _event(to, **detail), now_ms(), *allowed],
                client=client,
            )

        return sum(int(moved) for moved in self._each(move, [[m] for m in message_ids]))

    def cancel_many(self, message_ids: Sequence[str]) -> list[int]:
        """Cancel each message still queued or scheduled (`lua/cancel_message.lua`), in one
        round trip: per message the receipt level it opened, 0 for none, -1 if not cancelled."""
        return [int(answer) for answer in self._each(self._cancel, [(m,) for m in message_ids])]

    def _cancel(self, client: redis.Redis | redis.client.Pipeline, message_id: str) -> Any:
        return self._scripts.cancel_message(
            keys=[
                message_key(message_id), segments_key(message_id), events_key(message_id),
                SUBMIT_WATCH_KEY, DELIVERY_WATCH_KEY, RECEIPT_WATCH_KEY,
            ],
            args=[now_ms(), _event("cancelled", status="cancelled")],
            client=client,
        )  # fmt: skip

    def next_concat_reference(self, message_id: str, to: str, bits: int) -> int:
        """The message's concatenation reference: fixed once chosen, fresh per recipient."""
        return int(
            self._scripts.concat_reference(
                keys=[message_key(message_id), f"{PREFIX}concat:{to}"],
                args=[1 << bits, CONCAT_COUNTER_TTL_SECONDS],
            )
        )

    def begin_send(self, message_id: str, bits: int) -> Begun | None:
        """The start of a send in one round trip: load the message and, unless it is final
        or its validity ran out (`Begun.state` says so; nothing changed), move it from queued or
        scheduled to submitting and fix its concatenation reference (`next_concat_reference`).
        None for an unknown message."""
        return _begun(self._begin(self.redis, message_id, bits))

    def begin_sends(self, message_ids: Sequence[str], bits: int) -> list[Begun | None]:
        """`begin_send` for a chunk of messages in one pipelined round trip."""
        found = self._each(self._begin, [(message_id, bits) for message_id in message_ids])
        return [_begun(answer) for answer in found]

    def _each(self, call: Callable[..., Any], items: Sequence[Sequence[Any]]) -> list[Any]:
        """`call(client, *item)` for every item in one round trip (`lua_scripts.each`)."""
        return lua_scripts.each(self.redis, call, items)

    def _begin(
        self, client: redis.Redis | redis.client.Pipeline, message_id: str, bits: int
    ) -> Any:
        return self._scripts.begin_send(
            keys=_transition_keys(message_id),
            args=[
                now_ms(), _event("submitting"), 1 << bits, CONCAT_COUNTER_TTL_SECONDS,
                f"{PREFIX}concat:",
            ],
            client=client,
        )  # fmt: skip

    def count_send_attempt(self, message_id: str) -> int:
        """Count one more transient submission failure; returns the count."""
        return int(self.redis.hincrby(message_key(message_id), "send_attempts", 1))

    def expect_progress(self, message_id: str, due_ms: int) -> None:
        """Tell the reconciler when the submission should move next (a retry is due then)."""
        self.redis.zadd(SUBMIT_WATCH_KEY, {message_id: due_ms})

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the system-wide counters."""
        self.redis.hincrby(COUNTERS_KEY, name, amount)

    def counters(self) -> dict[str, int]:
        raw = cast(dict[str, str], self.redis.hgetall(COUNTERS_KEY))
        return {name: int(value) for name, value in raw.items()}

    # -- segments -------------------------------------------------------------------------
    def segments(self, message_id: str, total: int) -> list[SegmentState]:
        raw = cast(dict[str, str], self.redis.hgetall(segments_key(message_id)))
        return parse_segments(raw, total)

    def claim_segment(self, message_id: str, seq: int, *, resend_unknown: bool = False) -> bool:
        """Atomically take a pending segment for submission; False if anyone already did.

        With `resend_unknown` (the carrier honours client references) a segment whose outcome
        is unknown is taken too: it is resent with the same reference.

        A claim whose reply is lost is asked for once more with the same token, which the
        script recognises as this claim's (docs/reliability.md, "When a Redis reply is lost"):
        so it is not left held by nobody, to end `unknown` though nothing was submitted.
        """
        keys = [segments_key(message_id)]
        args = [seq, now_ms(), "1" if resend_unknown else "0", uuid.uuid4().hex]
        try:
            return bool(self._scripts.claim_segment(keys=keys, args=args))
        except (redis.ConnectionError, redis.TimeoutError):
            return bool(self._scripts.claim_segment(keys=keys, args=args))

    def release_segment(self, message_id: str, seq: int, error_code: str, error: str) -> None:
        """Put a claimed segment back to pending after a failure that sent nothing."""
        self._scripts.release_segment(
            keys=[segments_key(message_id)], args=[seq, error_code, error]
        )

    def record_accepted(
        self, message_id: str, seq: int, carrier: str, carrier_id: str, *, sent: bool = False
    ) -> bool:
        """Store the carrier's id for a submitted segment and index it for receipts; the
        segment is `accepted`, or with `sent` `sent` (a gateway queued it, the SMSC's answer
        comes as a receipt).

        False when the segment had already moved on (a receipt came first, or another run
        recorded it): the index is still written, the segment's state is left alone.
        """
        return self.accept_segment(message_id, seq, carrier, carrier_id, sent=sent)[0]

    def accept_segment(
        self, message_id: str, seq: int, carrier: str, carrier_id: str, *, sent: bool = False
    ) -> tuple[bool, list[dict[str, str]]]:
        """`record_accepted`, also handing back the receipts parked for that carrier id (they
        came before the id was stored; the caller applies them)."""
        changed, parked = self._scripts.record_accepted(
            keys=[
                segments_key(message_id), carrier_index_key(carrier, carrier_id),
                parked_receipts_key(carrier, carrier_id),
            ],
            args=[seq, carrier_id, carrier, f"{message_id}:{seq}", CARRIER_INDEX_TTL_SECONDS,
                  _recorded(sent)],
        )  # fmt: skip
        return bool(changed), [orjson.loads(item) for item in parked]

    def link_carrier_ids(
        self, carrier: str, links: Sequence[tuple[str, int, str]]
    ) -> list[list[dict[str, str]]]:
        """Index each segment `(message id, seq)` also under a second carrier id (an SMSC's
        answer to a segment already indexed under ours) and make it the segment's carrier id;
        for each, the receipts parked for that id (in one pipelined round trip)."""
        found = self._each(
            lambda client, message_id, seq, carrier_id: self._scripts.carrier_id_link(
                keys=[
                    segments_key(message_id), carrier_index_key(carrier, carrier_id),
                    parked_receipts_key(carrier, carrier_id),
                ],
                args=[seq, carrier_id, f"{message_id}:{seq}", CARRIER_INDEX_TTL_SECONDS],
                client=client,
            ),
            links,
        )  # fmt: skip
        return [[orjson.loads(item) for item in parked] for parked in found]

    def park_receipt(
        self,
        carrier: str,
        carrier_id: str,
        receipt: Mapping[str, str | None],
        ttl: int = PARKED_RECEIPT_TTL_SECONDS,
    ) -> tuple[str, int] | None:
        """Keep a receipt for a carrier id we do not know until the id is stored (at most
        `ttl` seconds); or, if it was stored meanwhile, its (message id, seq)."""
        found = self._park(self.redis, carrier, carrier_id, receipt, ttl)
        return _segment_ref(found) if found else None

    def _park(
        self,
        client: redis.Redis | redis.client.Pipeline,
        carrier: str,
        carrier_id: str,
        receipt: Mapping[str, str | None],
        ttl: int = PARKED_RECEIPT_TTL_SECONDS,
    ) -> Any:
        return self._scripts.park_receipt(
            keys=[carrier_index_key(carrier, carrier_id), parked_receipts_key(carrier, carrier_id)],
            args=[orjson.dumps(dict(receipt)), ttl],
            client=client,
        )

    def mark_unknown(
        self,
        message_id: str,
        seq: int,
        error_code: str,
        error: str,
        *,
        claimed_before: int | None = None,
        counter: str = "unknown_outcome",
    ) -> bool:
        """A claimed segment's outcome is unknown (no answer; or, with `claimed_before`, its
        claim is older than that: the run holding it died). Counted; False if not claimed."""
        before = "" if claimed_before is None else claimed_before
        return bool(
            self._scripts.mark_unknown(
                keys=[segments_key(message_id), message_key(message_id), COUNTERS_KEY],
                args=[seq, before, error_code, error, now_ms(), counter],
            )
        )

    def record_segment_failure(
        self, message_id: str, seq: int, status: str, error_code: str, error: str
    ) -> None:
        """Mark a segment rejected / failed / unknown with the carrier's reason."""
        self.redis.hset(
            segments_key(message_id),
            mapping=_fields(
                {
                    f"{seq}:status": status,
                    f"{seq}:error_code": error_code,
                    f"{seq}:error_message": error,
                    f"{seq}:done_at": str(now_ms()),
                }
            ),
        )

    def finish_submission(self, message_id: str, total: int) -> str | None:
        """After every segment was tried: the submission outcome, set once (None if unfinished).

        accepted when every segment was accepted (or already has a terminal receipt), rejected
        when any was rejected, failed when any failed (or its outcome stayed unknown).
        """
        return self.finish(message_id, total).outcome

    def finish(self, message_id: str, total: int) -> Finished:
        """`finish_submission`, also opening the client receipt it calls for (atomically)."""
        result = self._scripts.finish_submission(
            keys=[
                message_key(message_id), segments_key(message_id), events_key(message_id),
                SUBMIT_WATCH_KEY, DELIVERY_WATCH_KEY, RECEIPT_WATCH_KEY,
            ],
            args=[total, now_ms()],
        )  # fmt: skip
        if not result:
            return Finished(None)
        outcome, level = result
        return Finished(str(outcome), int(level))

    def accept_and_finish(
        self,
        message_id: str,
        seq: int,
        carrier: str,
        carrier_id: str,
        total: int,
        *,
        sent: bool = False,
    ) -> tuple[bool, list[dict[str, str]], Finished | None]:
        """`accept_segment` of the last segment and then `finish`, in one atomic step.

        When receipts were parked for the carrier id, nothing is finished (None): the caller
        applies them, then finishes, as after `accept_segment`.
        """
        answer = self._scripts.accept_and_finish(
            keys=[
                message_key(message_id), segments_key(message_id), events_key(message_id),
                SUBMIT_WATCH_KEY, DELIVERY_WATCH_KEY, RECEIPT_WATCH_KEY,
                carrier_index_key(carrier, carrier_id), parked_receipts_key(carrier, carrier_id),
            ],
            args=[
                total, now_ms(), seq, carrier_id, carrier, f"{message_id}:{seq}",
                CARRIER_INDEX_TTL_SECONDS, _recorded(sent),
            ],
        )  # fmt: skip
        changed, parked = answer[0], [orjson.loads(item) for item in answer[1]]
        if parked or len(answer) < 3:
            return bool(changed), parked, None
        result = answer[2]
        finished = Finished(str(result[0]), int(result[1])) if result else Finished(None)
        return bool(changed), parked, finished

    def segment_for_carrier_id(self, carrier: str, carrier_id: str) -> tuple[str, int] | None:
        value = cast(str | None, self.redis.get(carrier_index_key(carrier, carrier_id)))
        return _segment_ref(value) if value else None

    # Batched carrier receipts: one round trip for many (a single one is sent alone).
    def segments_for_carrier_ids(
        self, carrier: str, carrier_ids: Sequence[str]
    ) -> list[tuple[str, int] | None]:
        """`segment_for_carrier_id` of each id, in one MGET."""
        keys = [carrier_index_key(carrier, carrier_id) for carrier_id in carrier_ids]
        values = cast(list[str | None], self.redis.mget(keys)) if keys else []
        return [_segment_ref(value) if value else None for value in values]

    def park_receipts(
        self,
        carrier: str,
        receipts: Sequence[tuple[str, Mapping[str, str | None]]],
        ttl: int = PARKED_RECEIPT_TTL_SECONDS,
    ) -> list[tuple[str, int] | None]:
        """`park_receipt` of each (carrier id, receipt), in order, in one pipeline."""
        found = self._each(self._park, [(carrier, cid, receipt, ttl) for cid, receipt in receipts])
        return [_segment_ref(answer) if answer else None for answer in found]

    def apply_receipts(
        self, receipts: Sequence[tuple[str, int, str, str | None, str | None]]
    ) -> list[AggregateResult]:
        """`apply_receipt` of each (message id, seq, status, error code, error message), in
        order (as if one after another), in one pipeline."""
        return [_aggregate(answer) for answer in self._each(self._apply, receipts)]

    def apply_receipt(
        self,
        message_id: str,
        seq: int,
        status: str,
        error_code: str | None,
        error_message: str | None,
    ) -> AggregateResult:
        """Apply one carrier receipt to its segment and re-derive the message state, atomically.

        A segment never goes backwards (a duplicate or late receipt changes nothing), and the
        message becomes final exactly once: `became_final` is True for one caller only. A
        receipt for a `sent` segment (the SMSC's answer) may also finish the submission, which
        opens the level-1 receipt (`AggregateResult.receipt_levels`).
        """
        return _aggregate(
            self._apply(self.redis, message_id, seq, status, error_code, error_message)
        )

    def _apply(
        self,
        client: redis.Redis | redis.client.Pipeline,
        message_id: str,
        seq: int,
        status: str,
        error_code: str | None,
        error_message: str | None,
    ) -> Any:
        return self._scripts.apply_receipt(
            keys=[
                message_key(message_id), segments_key(message_id), events_key(message_id),
                DELIVERY_WATCH_KEY, RECEIPT_WATCH_KEY, SUBMIT_WATCH_KEY,
            ],
            args=[seq, status, error_code or "", error_message or "", now_ms()],
            client=client,
        )  # fmt: skip

    # -- receipts to the client ----------------------------------------------------------------
    def open_receipt(self, message_id: str, level: int) -> bool:
        """Register the level's receipt; True only for the first caller (who enqueues it)."""
        return bool(
            self._scripts.open_receipt(
                keys=[message_key(message_id), segments_key(message_id), RECEIPT_WATCH_KEY],
                args=[level, now_ms()],
            )
        )

    def replay_receipt(self, message_id: str, level: int) -> bool:
        """Make an opened receipt due again (same event id and seq, a fresh retry schedule)."""
        return bool(
            self._scripts.replay_receipt(
                keys=[message_key(message_id), RECEIPT_WATCH_KEY, DEAD_LETTER_KEY],
                args=[level, now_ms()],
            )
        )



class Begun(NamedTuple):
    """The start of a send (`Store.begin_send`): `state` is `started`, `final` or `expired`."""

    state: str
    message: Message
    concat_ref: int | None


def _aggregate(answer: Any) -> AggregateResult:
    """The answer of the apply-receipt script as an `AggregateResult`."""
    changed, status, became_final, level, submitted = answer
    return AggregateResult(
        bool(changed), str(status), bool(became_final), int(level), int(submitted)
    )


def _recorded(sent: bool) -> str:
    """The state of a segment the carrier took: `sent` while the SMSC's answer is to come."""
    return SegmentStatus.SENT if sent else SegmentStatus.ACCEPTED


def _begun(found: Any) -> Begun | None:
    """The answer of the begin-send script as a `Begun` (None: no such message)."""
    if not found:
        return None
    state, flat = found
    data = dict(zip(flat[::2], flat[1::2], strict=True))
    reference = data.get("concat_ref")
    return Begun(str(state), Message.from_hash(data), int(reference) if reference else None)


def _segment_ref(value: str) -> tuple[str, int]:
    message_id, _, seq = value.rpartition(":")
    return message_id, int(seq)


def _transition_keys(message_id: str) -> list[str]:
    return [message_key(message_id), events_key(message_id), SUBMIT_WATCH_KEY, DELIVERY_WATCH_KEY]


def _fields(values: dict[str, str]) -> dict[Any, Any]:
    """A str→str dict as redis-py's `hset(mapping=…)` types it (its key type is invariant)."""
    return cast(dict[Any, Any], values)


def _event(event: str, **detail: Any) -> bytes:
    return orjson.dumps({"at": now_ms(), "event": event, **detail})
