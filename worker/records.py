"""What the store holds, as Python values: a message, its segments, a receipt's effect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.clock import now_ms
from worker.contract import DlrMethod, MessageStatus, Priority, SegmentStatus


@dataclass(frozen=True, slots=True)
class Message:
    """What a client asked to send, as stored."""

    id: str
    to: str
    sender: str
    content: str
    coding: str = "auto"
    priority: Priority = Priority.NORMAL
    dlr: bool = False
    dlr_level: int = 1
    dlr_url: str = ""
    dlr_method: DlrMethod = DlrMethod.POST
    dlr_batch: bool = False  # receipts go out together with others to the same URL
    client_ref: str = ""
    key_id: str = ""
    encoding: str = ""
    segments: int = 0
    characters: int = 0
    status: MessageStatus = MessageStatus.QUEUED
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
            "priority": str(self.priority),
            "dlr": "1" if self.dlr else "0",
            "dlr_level": str(self.dlr_level),
            "dlr_url": self.dlr_url,
            "dlr_method": str(self.dlr_method),
            "dlr_batch": "1" if self.dlr_batch else "0",
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
            "dlr_batch",
        }  # fmt: skip
        return cls(
            id=data["id"],
            to=data["to"],
            sender=data.get("from", ""),
            content=data.get("content", ""),
            coding=data.get("coding", "auto"),
            priority=Priority(data.get("priority", Priority.NORMAL)),
            dlr=data.get("dlr") == "1",
            dlr_level=int(data.get("dlr_level") or 1),
            dlr_url=data.get("dlr_url", ""),
            dlr_method=DlrMethod(data.get("dlr_method", DlrMethod.POST)),
            dlr_batch=data.get("dlr_batch") == "1",
            client_ref=data.get("client_ref", ""),
            key_id=data.get("key_id", ""),
            encoding=data.get("encoding", ""),
            segments=int(data.get("segments") or 0),
            characters=int(data.get("characters") or 0),
            status=MessageStatus(data.get("status", MessageStatus.QUEUED)),
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
    receipt_level: int = 0  # the client receipt it opened (the caller enqueues it), 0 if none
    # The client receipt it opened by finishing the submission (a `sent` segment's SMSC
    # answered: level 1, or 2 for a final outcome with level 2 only), 0 if none.
    submission_receipt_level: int = 0

    @property
    def receipt_levels(self) -> tuple[int, ...]:
        """Every client receipt it opened, level 1 first (the caller enqueues each)."""
        levels = (self.submission_receipt_level, self.receipt_level)
        return tuple(level for level in levels if level)


@dataclass(frozen=True, slots=True)
class Finished:
    """What finishing a submission did: its outcome (None while a segment is open) and the
    client receipt level it opened (0 if none; the caller enqueues that receipt)."""

    outcome: str | None
    receipt_level: int = 0
