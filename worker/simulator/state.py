"""The simulator's books: submissions per client reference, reassembly, completed messages."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.errors import SmsqError

if TYPE_CHECKING:
    from worker.encoding import DecodedSegment

Decode = Callable[[bytes, bytes, int], "DecodedSegment"]
Reassemble = Callable[[Sequence["DecodedSegment"]], str]

# Submission times kept for `/stats` (rate measurements); later ones are not recorded.
MAX_TIMESTAMPS = 100_000


class BadPayloadError(ValueError):
    """A segment whose UDH, payload or coding does not decode."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One accepted segment, as it came over the wire (bytes already un-hexed)."""

    to: str
    sender: str
    udh: bytes
    payload: bytes
    data_coding: int
    client_ref: str
    text: str


@dataclass(slots=True)
class _Partial:
    """A concatenated message still waiting for some of its parts."""

    total: int
    sender: str
    data_coding: int
    parts: dict[int, DecodedSegment] = field(default_factory=dict)


def _encoding() -> tuple[Decode, Reassemble]:
    # Imported on first use, so that importing the CLI does not load the encoding tables.
    from worker.encoding import decode_segment, reassemble

    return decode_segment, reassemble


class SimulatorState:
    """Counts and reassembles submissions; every method is O(1) per segment."""

    def __init__(self) -> None:
        self._decode: Decode | None = None
        self._reassemble: Reassemble | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything."""
        self.submissions = 0
        self.by_client_ref: Counter[str] = Counter()
        self.duplicates: list[str] = []
        self.mismatches: list[str] = []
        self.messages: list[dict[str, object]] = []
        self.errors: Counter[str] = Counter()
        self.receipts_sent = 0
        self.receipts_failed = 0
        self.receipt_requests = 0  # receipt POSTs made (every attempt; a batch is one)
        self.submitted_at: list[float] = []  # Unix time of each accepted submission
        self._partials: dict[tuple[str, int], _Partial] = {}
        # Reliability: the first carrier id of each client_ref, for `dedupe_client_refs`.
        self.carrier_ids: dict[str, str] = {}
        self.deduplicated = 0  # repeats answered with the first carrier id (no second SMS)

    def decode(self, segment: Segment) -> DecodedSegment:
        """Decode one segment; `BadPayloadError` when it does not decode or is inconsistent."""
        if self._decode is None or self._reassemble is None:
            self._decode, self._reassemble = _encoding()
        if segment.data_coding not in (0, 8):
            raise BadPayloadError(f"unsupported data_coding {segment.data_coding}")
        try:
            decoded = self._decode(segment.udh, segment.payload, segment.data_coding)
        # The decoder's own errors, and whatever a truncated UDH trips inside it.
        except (SmsqError, ValueError, IndexError, KeyError) as exc:
            raise BadPayloadError(f"payload does not decode: {exc}") from exc
        if not 1 <= decoded.seq <= decoded.total:
            raise BadPayloadError(f"segment {decoded.seq} of {decoded.total}")
        if decoded.total > 1 and decoded.reference is None:
            raise BadPayloadError("multipart segment without a reference")
        return decoded

    def record(self, segment: Segment, decoded: DecodedSegment) -> None:
        """Count an accepted segment and file it for reassembly."""
        self.submissions += 1
        if len(self.submitted_at) < MAX_TIMESTAMPS:
            self.submitted_at.append(time.time())
        ref = segment.client_ref
        self.by_client_ref[ref] += 1
        if self.by_client_ref[ref] == 2:
            self.duplicates.append(ref)
        if segment.text and decoded.text != segment.text:
            self.mismatches.append(ref)
        if decoded.reference is None or decoded.total == 1:
            self._complete(segment.to, segment.sender, segment.data_coding, [decoded])
            return
        key = (segment.to, decoded.reference)
        partial = self._partials.get(key)
        if partial is None or partial.total != decoded.total:
            # A reference reused with another length starts a new message; the old one
            # can never complete.
            partial = _Partial(decoded.total, segment.sender, segment.data_coding)
            self._partials[key] = partial
        partial.parts[decoded.seq] = decoded
        if len(partial.parts) == partial.total:
            del self._partials[key]
            parts = [partial.parts[seq] for seq in sorted(partial.parts)]
            self._complete(segment.to, partial.sender, partial.data_coding, parts)

    def _complete(
        self, to: str, sender: str, data_coding: int, parts: list[DecodedSegment]
    ) -> None:
        assert self._reassemble is not None  # set by decode(), which always runs first
        text = parts[0].text if len(parts) == 1 else self._reassemble(parts)
        self.messages.append(
            {
                "to": to,
                "from": sender,
                "text": text,
                "segments": len(parts),
                "data_coding": data_coding,
            }
        )

    def stats(self) -> dict[str, object]:
        """The `GET /stats` body."""
        return {
            "submissions": self.submissions,
            "by_client_ref": self.by_client_ref,
            "duplicates": self.duplicates,
            "mismatches": self.mismatches,
            "messages": self.messages,
            "pending_parts": sum(len(p.parts) for p in self._partials.values()),
            "errors": self.errors,
            "receipts_sent": self.receipts_sent,
            "receipts_failed": self.receipts_failed,
            "receipt_requests": self.receipt_requests,
            "submitted_at": self.submitted_at,
            "deduplicated": self.deduplicated,
        }
