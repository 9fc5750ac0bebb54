"""Reading segments back: UDH, septet unpacking or UTF-16, and reassembly (simulator, tests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.encoding.gsm7 import header_septets, to_text, unpack
from worker.encoding.message import GSM7_DCS, UCS2_DCS
from worker.encoding.national import charset_for
from worker.encoding.udh import parse


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    """One segment's text and its place in the message."""

    text: str
    reference: int | None  # None for a message of one segment
    total: int
    seq: int


def decode_segment(
    udh: bytes, payload: bytes, data_coding: int, *, septets: int | None = None
) -> DecodedSegment:
    """Decode one segment as a handset would; malformed input raises ValueError.

    `septets` is the septet count after the UDH (TP-UDL minus the header septets). Without it
    the count comes from the payload length and CR padding is stripped (TS 23.038 §6.1.2.3.1),
    which is exact except that a segment ending in CR may come back one CR short: the CR ending
    a full segment, or one of two CRs ending one septet past an octet boundary.
    Shift IEs for tables we lack are ignored, as a handset without them does.
    """
    header = parse(udh)
    if data_coding == GSM7_DCS:
        fill = 7 * header_septets(len(udh)) - 8 * len(udh)
        codes = unpack(payload, fill, septets)
        text = to_text(codes, charset_for(header.locking, header.single))
    elif data_coding == UCS2_DCS:
        if len(payload) % 2:
            raise ValueError(f"UCS-2 payload of odd length {len(payload)}")
        text = payload.decode("utf-16-be")
    else:
        raise ValueError(f"unsupported data coding {data_coding}")
    return DecodedSegment(text, header.reference, header.total, header.seq)


def reassemble(segments: Sequence[DecodedSegment]) -> str:
    """The message text from all of its segments, in any order; ValueError if any is missing."""
    if not segments:
        raise ValueError("no segments")
    first = segments[0]
    if any(s.reference != first.reference or s.total != first.total for s in segments):
        raise ValueError("segments of different messages")
    ordered = sorted(segments, key=lambda s: s.seq)
    if [s.seq for s in ordered] != list(range(1, first.total + 1)):
        raise ValueError(f"expected parts 1..{first.total}, got {[s.seq for s in ordered]}")
    return "".join(s.text for s in ordered)
