"""Where a message splits into segments: capacities per UDH size and the cut points.

Cuts are greedy over atomic units, which gives the fewest segments for an ordered text: an
escape pair (GSM-7), a code point (UTF-16 surrogate pairs are never split) and, in UCS-2, a
whole grapheme cluster whenever the cluster fits in one segment.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import cache

from worker.encoding.alphabet import ESC
from worker.encoding.graphemes import ASTRAL, inner_positions

USER_DATA_OCTETS = 140  # TP-UD of one SMS (TS 23.040)
MAX_SEGMENTS = 255  # the concatenation IE counts parts in one octet
CONCAT_IE_OCTETS = {8: 5, 16: 6}  # IEI, IEDL, reference (1 or 2 octets), total, sequence


def udh_octets(ies: int) -> int:
    """UDH size for `ies` octets of information elements: they plus the UDHL octet, or none."""
    return ies + 1 if ies else 0


def gsm7_capacity(udh: int) -> int:
    """Septets after a UDH of `udh` octets; the fill bits align the text to a septet."""
    return (USER_DATA_OCTETS - udh) * 8 // 7


def ucs2_capacity(udh: int) -> int:
    """UTF-16 units after a UDH of `udh` octets (an odd UDH leaves one octet unused)."""
    return (USER_DATA_OCTETS - udh) // 2


@cache
def capacities(shift_ies: int, reference_bits: int, gsm7: bool) -> tuple[int, int]:
    """(single-segment capacity, per-part capacity of a concatenated message)."""
    single = udh_octets(shift_ies)
    concat = udh_octets(shift_ies + CONCAT_IE_OCTETS[reference_bits])
    if gsm7:
        return gsm7_capacity(single), gsm7_capacity(concat)
    return ucs2_capacity(single), ucs2_capacity(concat)


def _even_ends(units: int, single: int, concat: int) -> list[int]:
    """Cut points of a text whose every unit is its own atom and costs one."""
    if units <= single:
        return [units]
    return [*range(concat, units, concat), units]


def split_septets(septets: bytes, single: int, concat: int) -> list[int]:
    """Segment ends as septet offsets; an ESC never ends a segment without its code."""
    n = len(septets)
    if n <= single:
        return [n]
    if ESC not in septets:
        return _even_ends(n, single, concat)
    ends = []
    start = 0
    while n - start > concat:
        end = start + concat
        # ESC is never an extension code, so a segment-final ESC is always a pair's first half.
        if septets[end - 1] == ESC:
            end -= 1
        ends.append(end)
        start = end
    ends.append(n)
    return ends


def utf16_units(text: str) -> int:
    """UTF-16 code units of `text`: astral characters (most emoji) count two."""
    return len(text.encode("utf-16-le")) // 2


def split_units(text: str, units: int, single: int, concat: int) -> list[int]:
    """Segment ends as code point offsets into `text`, which has `units` UTF-16 units."""
    if units <= single:
        return [len(text)]
    inner = inner_positions(text)
    if not inner and units == len(text):
        return _even_ends(units, single, concat)  # every unit is a whole character
    return _Cutter(text, inner, concat).ends()


class _Cutter:
    """Greedy UCS-2 cuts that look only around each cut: one step per segment, not per character.

    Same result as packing atomic pieces greedily, where a piece is a grapheme cluster that fits
    in a segment, or else one code point of a cluster too long for any segment.
    """

    def __init__(self, text: str, inner: set[int], capacity: int) -> None:
        self.size = len(text)
        self.inner = inner  # offsets where a cut would split a cluster
        self.astral = [m.start() for m in ASTRAL.finditer(text)]  # characters costing 2 units
        self.capacity = capacity

    def units(self, start: int, end: int) -> int:
        """UTF-16 units of text[start:end]."""
        return end - start + bisect_left(self.astral, end) - bisect_left(self.astral, start)

    def fill(self, start: int) -> int:
        """The furthest code point offset whose text from `start` fits one segment."""
        end = min(self.size, start + self.capacity)
        while self.units(start, end) > self.capacity:
            end -= 1
        return end

    def cut(self, start: int) -> int:
        """Where the segment starting at `start` ends."""
        end = self.fill(start)
        if end == self.size or end not in self.inner:
            return end
        first = last = end
        while first in self.inner:
            first -= 1
        while last < self.size and last in self.inner:
            last += 1
        # Move the cluster whole to the next segment, unless it cannot fit in any segment
        # (first <= start means the segment began inside such a cluster).
        if first > start and self.units(first, last) <= self.capacity:
            return first
        return end

    def ends(self) -> list[int]:
        ends = [self.cut(0)]
        while ends[-1] < self.size:
            ends.append(self.cut(ends[-1]))
        return ends
