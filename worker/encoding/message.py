"""The engine's entry points: summarize a text, encode it into segments, pick the next reference.

The concatenation reference is the caller's: the worker keeps a per-recipient counter in Redis
and advances it with `next_reference`, so that two long messages in flight to one handset do
not share a reference (a random 8-bit one collides with probability 1/256).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.encoding.alphabet import ESC
from worker.encoding.gsm7 import header_septets, pack, pad
from worker.encoding.national import LANGUAGE_NAMES
from worker.encoding.plan import Encoding, Plan, ReferenceBits, plan
from worker.encoding.udh import build, concat_ie

GSM7_DCS, UCS2_DCS = 0, 8  # data coding scheme values: default alphabet, UCS-2 (TS 23.038 §4)


@dataclass(frozen=True, slots=True)
class Segment:
    """One carrier-sized part of a message."""

    seq: int  # 1-based
    total: int
    udh: bytes  # UDHL included; b"" for a single segment without national language IEs
    payload: bytes  # user data after the UDH: packed septets (fill bits first) or UTF-16 BE
    data_coding: int  # 0 = GSM 7-bit, 8 = UCS-2
    text: str
    length: int  # septets (ESC pairs count two; fill and CR padding excluded) or UTF-16 units


@dataclass(frozen=True, slots=True)
class Summary:
    """What a text costs, without building the segments."""

    encoding: Encoding
    segments: int
    characters: int  # code points of the text sent
    ucs2_characters: tuple[str, ...]  # what kept it out of GSM-7, unique, in order of appearance
    national: str | None = None  # the national language whose tables are used, if any


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """A message ready for a carrier: its segments, and what was sent instead of what was asked."""

    encoding: Encoding
    segments: tuple[Segment, ...]
    characters: int  # code points of `text`
    ucs2_characters: tuple[str, ...]
    text: str  # what is sent (smart encoding applied, when it was)
    original_text: str  # what the client asked for
    national: str | None = None


def summarize(
    text: str,
    coding: str | int | None = "auto",
    *,
    smart: bool = False,
    national: str | int | None = None,
    max_segments: int = 255,
    reference_bits: ReferenceBits = 8,
) -> Summary:
    """Encoding, segment count and characters of `text`: the counts `encode_message` gives.

    Raises `ValidationError` (coding, national), `EncodingError` (empty text, raw ESC, text
    that forced GSM-7 cannot carry) or `TooManySegmentsError`.
    """
    chosen = plan(
        text,
        coding,
        smart=smart,
        national=national,
        reference_bits=reference_bits,
        max_segments=max_segments,
    )
    return Summary(
        chosen.encoding,
        len(chosen.ends),
        len(chosen.text),
        chosen.ucs2_characters,
        _national(chosen),
    )


def encode_message(
    text: str,
    coding: str | int | None = "auto",
    *,
    smart: bool = False,
    national: str | int | None = None,
    reference: int = 0,
    reference_bits: ReferenceBits = 8,
    max_segments: int = 255,
) -> EncodedMessage:
    """Encode `text` into segments, each with its UDH and payload; errors as `summarize`.

    `reference` (0-255, or 0-65535 with `reference_bits=16`) goes into every part's
    concatenation IE; a single segment does not use it.
    """
    if not 0 <= reference < 1 << reference_bits:
        raise ValueError(f"reference {reference} does not fit in {reference_bits} bits")
    chosen = plan(
        text,
        coding,
        smart=smart,
        national=national,
        reference_bits=reference_bits,
        max_segments=max_segments,
    )
    build_segments = _gsm7_segments if chosen.encoding == "gsm7" else _ucs2_segments
    return EncodedMessage(
        chosen.encoding,
        build_segments(chosen, reference, reference_bits),
        len(chosen.text),
        chosen.ucs2_characters,
        chosen.text,
        chosen.original_text,
        _national(chosen),
    )


def next_reference(previous: int, bits: ReferenceBits = 8) -> int:
    """The reference after `previous`, wrapping within `bits` bits (the worker's counter)."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits!r}")
    return (previous + 1) % (1 << bits)


def _national(chosen: Plan) -> str | None:
    charset = chosen.charset
    if charset is None:
        return None
    return LANGUAGE_NAMES.get(charset.locking or charset.single)


def _udh(ies: bytes, reference: int, bits: int, total: int, seq: int) -> bytes:
    return build(ies if total == 1 else concat_ie(reference, bits, total, seq) + ies)


def _gsm7_segments(chosen: Plan, reference: int, bits: int) -> tuple[Segment, ...]:
    assert chosen.charset is not None  # a GSM-7 plan always has its charset
    ies, septets, text = chosen.charset.shift_ies, chosen.septets, chosen.text
    total = len(chosen.ends)
    if total == 1 and not ies:
        # The OTP case: no UDH, no fill bits, one slice.
        payload = pack(pad(septets, 0, text.endswith("\r")), 0)
        return (Segment(1, 1, b"", payload, GSM7_DCS, text, len(septets)),)
    segments = []
    start = text_start = 0
    for seq, end in enumerate(chosen.ends, 1):
        udh = _udh(ies, reference, bits, total, seq)
        header = header_septets(len(udh))
        # Every extension character is two septets and one character.
        text_end = end - septets.count(ESC, 0, end)
        part = text[text_start:text_end]
        padded = pad(septets[start:end], header, part.endswith("\r"))
        payload = pack(padded, 7 * header - 8 * len(udh))
        segments.append(Segment(seq, total, udh, payload, GSM7_DCS, part, end - start))
        start, text_start = end, text_end
    return tuple(segments)


def _ucs2_segments(chosen: Plan, reference: int, bits: int) -> tuple[Segment, ...]:
    text = chosen.text
    total = len(chosen.ends)
    segments = []
    start = 0
    for seq, end in enumerate(chosen.ends, 1):
        part = text[start:end]
        payload = part.encode("utf-16-be")
        udh = _udh(b"", reference, bits, total, seq)
        segments.append(Segment(seq, total, udh, payload, UCS2_DCS, part, len(payload) // 2))
        start = end
    return tuple(segments)
