"""Choosing how a message goes out: the encoding, the charset, the text sent and the cut points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.encoding.alphabet import DEFAULT, Charset, ascii_septets
from worker.encoding.national import candidates, resolve_language
from worker.encoding.segmentation import (
    MAX_SEGMENTS,
    capacities,
    split_septets,
    split_units,
    utf16_units,
)
from worker.encoding.smart import smart_map
from worker.errors import EncodingError, TooManySegmentsError, ValidationError

Encoding = Literal["gsm7", "ucs2"]
Coding = Literal["auto", "gsm7", "ucs2"]
ReferenceBits = Literal[8, 16]

# Lower-cased names (and DCS values as text) a client may use for a coding.
_CODINGS: dict[str, Coding] = {
    "auto": "auto",
    "gsm7": "gsm7", "gsm-7": "gsm7", "gsm": "gsm7", "0": "gsm7",
    "ucs2": "ucs2", "ucs-2": "ucs2", "utf-8": "ucs2", "utf8": "ucs2", "utf-16": "ucs2", "8": "ucs2",
}  # fmt: skip


def normalize_coding(coding: str | int | None) -> Coding:
    """The coding asked for (None, a name, or the DCS value 0 / 8) as auto, gsm7 or ucs2.

    Names are case-insensitive; anything else raises `ValidationError(field="coding")`.
    """
    if coding is None:
        return "auto"
    # The exact spelling is the common case: skip strip() and lower().
    found = _CODINGS.get(coding) if isinstance(coding, str) else None
    if found is None and not isinstance(coding, bool):
        found = _CODINGS.get(str(coding).strip().lower())
    if found is None:
        raise ValidationError(
            f"unknown coding {coding!r} (use auto, GSM7 / 0 or UCS2 / UTF-8 / 8)", field="coding"
        )
    return found


@dataclass(slots=True)
class Plan:
    """What to send: the text, its encoding, its charset (GSM-7) and where it splits."""

    encoding: Encoding
    text: str  # what is sent (after smart encoding, when that was applied)
    original_text: str
    charset: Charset | None  # the GSM-7 tables; None for UCS-2
    septets: bytes  # the GSM-7 septets of `text`; b"" for UCS-2
    ends: list[int]  # segment ends: septet offsets (GSM-7) or code point offsets (UCS-2)
    ucs2_characters: tuple[str, ...]


def plan(
    text: str,
    coding: str | int | None,
    *,
    smart: bool,
    national: str | int | None,
    reference_bits: int,
    max_segments: int,
) -> Plan:
    """Decide encoding, charset and cuts; raise the errors a client should see."""
    mode = normalize_coding(coding)
    charsets = candidates(resolve_language(national))
    limit = _segment_limit(max_segments)
    if reference_bits not in (8, 16):
        raise ValueError(f"reference_bits must be 8 or 16, not {reference_bits!r}")
    _check_text(text)
    if mode != "ucs2":
        # The common case: plain ASCII, one septet per character, the default tables.
        septets = ascii_septets(text)
        if septets is not None:
            ends = _checked(_gsm7_ends(DEFAULT, septets, reference_bits), limit)
            return Plan("gsm7", text, text, DEFAULT, septets, ends, ())
        sent = smart_map(text) if smart else text
        found = _cheapest_gsm7(sent, charsets, reference_bits, limit)
        if found is not None:
            charset, septets, ends = found
            return Plan("gsm7", sent, text, charset, septets, ends, ())
        if mode == "gsm7":
            bad = _offending(sent, charsets)
            raise EncodingError(
                f"text cannot be sent as GSM-7: {''.join(bad)!r} not in the GSM alphabet",
                characters=bad,
            )
    # UCS-2 carries the original text: smart encoding only helps when it reaches GSM-7.
    single, concat = capacities(0, reference_bits, gsm7=False)
    units = utf16_units(text)
    _refuse_early(units, single, concat, limit)
    ends = _checked(split_units(text, units, single, concat), limit)
    return Plan("ucs2", text, text, None, b"", ends, _offending(text, charsets))


def _check_text(text: str) -> None:
    if not text:
        raise EncodingError("text is empty", code="empty")
    if "\x1b" in text:
        # A raw ESC would change how the next character is read (ESC + '(' shows '{').
        raise EncodingError("text contains a raw ESC (U+001B)", characters=("\x1b",), code="escape")
    if not text.isascii():
        lone = tuple(dict.fromkeys(ch for ch in text if "\ud800" <= ch <= "\udfff"))
        if lone:  # not Unicode text at all: no handset could show it, no encoding can carry it
            raise EncodingError(
                "text contains lone UTF-16 surrogates", characters=lone, code="invalid_unicode"
            )


def _segment_limit(max_segments: int) -> int:
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) or max_segments < 1:
        raise ValidationError(
            f"max_segments must be a positive integer, not {max_segments!r}", field="max_segments"
        )
    return min(max_segments, MAX_SEGMENTS)


def _cheapest_gsm7(
    text: str, charsets: tuple[Charset, ...], reference_bits: int, limit: int
) -> tuple[Charset, bytes, list[int]] | None:
    """Among the charsets that carry `text`, the one needing fewest segments (then fewest IEs)."""
    best: tuple[Charset, bytes, list[int]] | None = None
    for charset in charsets:
        if not charset.chars.issuperset(text):
            continue
        septets = charset.septets(text)
        ends = _gsm7_ends(charset, septets, reference_bits)
        if best is None or len(ends) < len(best[2]):
            best = (charset, septets, ends)
        if len(ends) == 1:
            break  # nothing beats one segment, and later charsets cost more UDH octets
    if best is not None:
        _checked(best[2], limit)
    return best


def _gsm7_ends(charset: Charset, septets: bytes, reference_bits: int) -> list[int]:
    # Cutting septets costs one step per segment, so no early refusal is needed here.
    single, concat = capacities(len(charset.shift_ies), reference_bits, gsm7=True)
    return split_septets(septets, single, concat)


def _refuse_early(units: int, single: int, concat: int, limit: int) -> None:
    """Refuse a text that cannot fit before cutting it (a cost linear in its length, in Python).

    The error's `segments` is then a lower bound.
    """
    if units > max(single, limit * concat):
        raise TooManySegmentsError(-(-units // concat), limit)


def _checked(ends: list[int], limit: int) -> list[int]:
    if len(ends) > limit:
        raise TooManySegmentsError(len(ends), limit)
    return ends


def _offending(text: str, charsets: tuple[Charset, ...]) -> tuple[str, ...]:
    """The characters that keep `text` out of GSM-7: those the closest charset cannot carry."""
    return min((charset.offending(text) for charset in charsets), key=len)
