"""The message store in Redis: the source of truth for every message and segment.

Keys (all under `smsq:`):
  msg:{id}           hash: the message (fields of `Message`), its status and receipt bookkeeping
  msg:{id}:seg       hash: per-segment fields `{seq}:status`, `{seq}:carrier_id`,
                     `{seq}:error_code`, `{seq}:error_message`, `{seq}:submitted_at`,
                     `{seq}:done_at`, `{seq}:attempts`
  msg:{id}:events    list: JSON events with UTC millisecond timestamps
  cid:{carrier}:{carrier_id}  string `{id}:{seq}`: correlates carrier receipts to segments
  concat:{to}        counter for concatenation references per recipient

Every state change that can race (segment claim, receipt aggregation, receipt ordering) is one
Lua script, so two workers can never both submit a segment or both fire a final receipt.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis

from worker import scripts
from worker.clock import now_ms
from worker.contract import MessageStatus, SegmentStatus

PREFIX = "smsq:"
CARRIER_INDEX_TTL_SECONDS = 7 * 24 * 3600
CONCAT_COUNTER_TTL_SECONDS = 7 * 24 * 3600


def new_message_id() -> str:
    """A new message id: 32 lower-case hex characters, time-ordered in its first 12."""
    return f"{now_ms():012x}{uuid.uuid4().hex[:20]}"


def message_key(message_id: str) -> str:
    return f"{PREFIX}msg:{message_id}"


def segments_key(message_id: str) -> str:
    return f"{PREFIX}msg:{message_id}:seg"


def events_key(message_id: str) -> str:
    return f"{PREFIX}msg:{message_id}:events"


def carrier_index_key(carrier: str, carrier_id: str) -> str:
    return f"{PREFIX}cid:{carrier}:{carrier_id}"


@dataclass(frozen=True, slots=True)
class Message:
    """What a client asked to send, as stored."""

    id: str
    to: str
    sender: str
    content: str
    coding: str = "auto"
    priority: str = "normal"
    dlr: bool = False
    dlr_level: int = 1
    dlr_url: str = ""
    dlr_method: str = "POST"
    client_ref: str = ""
    key_id: str = ""
    encoding: str = ""
    segments: int = 0
    characters: int = 0
    status: str = MessageStatus.QUEUED
    created_at: int = 0
    send_at: int | None = None
    validity_until: int | None = None
    max_segments: int = 255
    batch_id: str = ""
    otp: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_hash(self) -> dict[str, str]:
        """The Redis hash fields of a new message."""
        fields = {
            "id": self.id,
            "to": self.to,
            "from": self.sender,
            "content": self.content,
            "coding": self.coding,
            "priority": self.priority,
            "dlr": "1" if self.dlr else "0",
            "dlr_level": str(self.dlr_level),
            "dlr_url": self.dlr_url,
            "dlr_method": self.dlr_method,
            "client_ref": self.client_ref,
            "key_id": self.key_id,
            "encoding": self.encoding,
            "segments": str(self.segments),
            "characters": str(self.characters),
            "status": str(self.status),
            "created_at": str(self.created_at or now_ms()),
            "max_segments": str(self.max_segments),
            "batch_id": self.batch_id,
            "otp": "1" if self.otp else "0",
        }
        # Empty and default values are left out (`from_hash` restores them): fewer bytes to
        # pack and store per message on the ingest hot path.
        fields = {k: v for k, v in fields.items() if v not in ("", "0") or k in _ALWAYS}
        if self.send_at is not None:
            fields["send_at"] = str(self.send_at)
        if self.validity_until is not None:
            fields["validity_until"] = str(self.validity_until)
        fields.update(self.extra)
        return fields

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> Message:
        """Rebuild a message from its Redis hash."""
        known = {
            "id", "to", "from", "content", "coding", "priority", "dlr", "dlr_level", "dlr_url",
            "dlr_method", "client_ref", "key_id", "encoding", "segments", "characters", "status",
            "created_at", "send_at", "validity_until", "max_segments", "batch_id", "otp",
        }  # fmt: skip
        return cls(
            id=data["id"],
            to=data["to"],
            sender=data.get("from", ""),
            content=data.get("content", ""),
            coding=data.get("coding", "auto"),
            priority=data.get("priority", "normal"),
            dlr=data.get("dlr") == "1",
            dlr_level=int(data.get("dlr_level") or 1),
            dlr_url=data.get("dlr_url", ""),
            dlr_method=data.get("dlr_method", "POST"),
            client_ref=data.get("client_ref", ""),
            key_id=data.get("key_id", ""),
            encoding=data.get("encoding", ""),
            segments=int(data.get("segments") or 0),
            characters=int(data.get("characters") or 0),
            status=data.get("status", MessageStatus.QUEUED),
            created_at=int(data.get("created_at") or 0),
            send_at=_optional_int(data.get("send_at")),
            validity_until=_optional_int(data.get("validity_until")),
            max_segments=int(data.get("max_segments") or 255),
            batch_id=data.get("batch_id", ""),
            otp=data.get("otp") == "1",
            extra={k: v for k, v in data.items() if k not in known},
        )


_ALWAYS = frozenset({"id", "to", "from", "content", "status", "segments"})


def _optional_int(value: str | None) -> int | None:
    return int(value) if value else None


@dataclass(frozen=True, slots=True)
class SegmentState:
    """One segment as stored."""

    seq: int
    status: str
    carrier_id: str | None = None
    carrier: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    submitted_at: int | None = None
    done_at: int | None = None
    attempts: int = 0


def parse_segments(raw: Mapping[str, str], total: int) -> list[SegmentState]:
    """Segment states from the flat `{seq}:{field}` hash, one per seq 1..total."""
    states = []
    for seq in range(1, total + 1):
        get = raw.get
        states.append(
            SegmentState(
                seq=seq,
                status=get(f"{seq}:status", SegmentStatus.PENDING),
                carrier_id=get(f"{seq}:carrier_id") or None,
                carrier=get(f"{seq}:carrier") or None,
                error_code=get(f"{seq}:error_code") or None,
                error_message=get(f"{seq}:error_message") or None,
                submitted_at=_optional_int(get(f"{seq}:submitted_at")),
                done_at=_optional_int(get(f"{seq}:done_at")),
                attempts=int(get(f"{seq}:attempts") or 0),
            )
        )
    return states


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """What a carrier receipt did: whether it changed the segment, and the message's new state."""

    segment_changed: bool
    message_status: str
    became_final: bool


class Store:
    """Typed access to the message store; one per process, thread-safe (redis-py pools)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._scripts = scripts.load(client)

    # -- messages -------------------------------------------------------------------------
    def create(self, message: Message, event: str = "accepted") -> None:
        """Store a new message with its first event (one round trip)."""
        pipe = self.redis.pipeline(transaction=True)
        self.add_create(pipe, message, event)
        pipe.execute()

    def add_create(self, pipe: redis.client.Pipeline, message: Message, event: str) -> None:
        """Queue the writes that create `message` on a pipeline (batched ingest)."""
        pipe.hset(message_key(message.id), mapping=_fields(message.to_hash()))
        pipe.rpush(events_key(message.id), _event(event, status=str(message.status)))

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
            keys=[message_key(message_id), events_key(message_id)],
            args=[to, _event(to, **detail), now_ms(), *sorted(allowed_from)],
        )
        return bool(moved)

    def transition_many(
        self, message_ids: list[str], allowed_from: frozenset[str], to: str, **detail: Any
    ) -> int:
        """`transition` for many messages in one pipelined round trip; returns how many moved."""
        pipe = self.redis.pipeline(transaction=False)
        for message_id in message_ids:
            self._scripts.transition(
                keys=[message_key(message_id), events_key(message_id)],
                args=[to, _event(to, **detail), now_ms(), *sorted(allowed_from)],
                client=pipe,
            )
        return sum(int(moved) for moved in pipe.execute())

    def next_concat_reference(self, message_id: str, to: str, bits: int) -> int:
        """The message's concatenation reference: fixed once chosen, fresh per recipient."""
        return int(
            self._scripts.concat_reference(
                keys=[message_key(message_id), f"{PREFIX}concat:{to}"],
                args=[1 << bits, CONCAT_COUNTER_TTL_SECONDS],
            )
        )

    def count_send_attempt(self, message_id: str) -> int:
        """Count one more transient submission failure; returns the count."""
        return int(self.redis.hincrby(message_key(message_id), "send_attempts", 1))

    # -- segments -------------------------------------------------------------------------
    def segments(self, message_id: str, total: int) -> list[SegmentState]:
        raw = cast(dict[str, str], self.redis.hgetall(segments_key(message_id)))
        return parse_segments(raw, total)

    def claim_segment(self, message_id: str, seq: int) -> bool:
        """Atomically take a pending segment for submission; False if anyone already did."""
        return bool(
            self._scripts.claim_segment(keys=[segments_key(message_id)], args=[seq, now_ms()])
        )

    def release_segment(self, message_id: str, seq: int, error_code: str, error: str) -> None:
        """Put a claimed segment back to pending after a failure that sent nothing."""
        self._scripts.release_segment(
            keys=[segments_key(message_id)], args=[seq, error_code, error]
        )

    def record_accepted(self, message_id: str, seq: int, carrier: str, carrier_id: str) -> None:
        """Store the carrier's id for a submitted segment and index it for receipts."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(
            carrier_index_key(carrier, carrier_id), f"{message_id}:{seq}",
            ex=CARRIER_INDEX_TTL_SECONDS,
        )  # fmt: skip
        pipe.hset(
            segments_key(message_id),
            mapping=_fields(
                {
                    f"{seq}:status": SegmentStatus.ACCEPTED,
                    f"{seq}:carrier_id": carrier_id,
                    f"{seq}:carrier": carrier,
                    f"{seq}:error_code": "",
                    f"{seq}:error_message": "",
                }
            ),
        )
        pipe.execute()

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
        when any was rejected, failed when any failed.
        """
        result = self._scripts.finish_submission(
            keys=[message_key(message_id), segments_key(message_id), events_key(message_id)],
            args=[total, now_ms()],
        )
        return str(result) if result else None

    def segment_for_carrier_id(self, carrier: str, carrier_id: str) -> tuple[str, int] | None:
        value = cast(str | None, self.redis.get(carrier_index_key(carrier, carrier_id)))
        if not value:
            return None
        message_id, _, seq = value.rpartition(":")
        return message_id, int(seq)

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
        message becomes final exactly once: `became_final` is True for one caller only.
        """
        changed, message_status, became_final = self._scripts.apply_receipt(
            keys=[message_key(message_id), segments_key(message_id), events_key(message_id)],
            args=[seq, status, error_code or "", error_message or "", now_ms()],
        )
        return AggregateResult(bool(changed), str(message_status), bool(became_final))

    # -- receipts to the client ----------------------------------------------------------------
    def open_receipt(self, message_id: str, level: int) -> bool:
        """Register the level's receipt; True only for the first caller (who enqueues it)."""
        return bool(self._scripts.open_receipt(keys=[message_key(message_id)], args=[level]))

    def claim_receipt(self, message_id: str, level: int, lease_ms: int = 60_000) -> int:
        """Take a receipt for sending: its seq (> 0), 0 if done or taken, -1 if parked.

        A level-2 receipt of a level-3 message is parked until the level-1 receipt is done, so
        the client sees them in order; `close_receipt` of level 1 releases it.
        """
        return int(
            self._scripts.claim_receipt(
                keys=[message_key(message_id)], args=[level, now_ms(), lease_ms]
            )
        )

    def release_receipt(self, message_id: str, level: int) -> None:
        """Give a claimed receipt back after a failed attempt (a retry will claim it again)."""
        self._scripts.release_receipt(keys=[message_key(message_id)], args=[level])

    def close_receipt(self, message_id: str, level: int, outcome: str) -> bool:
        """Mark a receipt done (`sent`, `gone`, `dead`); True if a parked level 2 is released."""
        return bool(
            self._scripts.close_receipt(keys=[message_key(message_id)], args=[level, outcome])
        )

    def receipt_attempt(self, message_id: str, level: int) -> int:
        """Count one more delivery attempt of the level's receipt; returns the count."""
        return int(self.redis.hincrby(message_key(message_id), f"rcpt:{level}:attempts", 1))


def _fields(values: dict[str, str]) -> dict[Any, Any]:
    """A str→str dict as redis-py's `hset(mapping=…)` types it (its key type is invariant)."""
    return cast(dict[Any, Any], values)


def _event(event: str, **detail: Any) -> bytes:
    return orjson.dumps({"at": now_ms(), "event": event, **detail})
