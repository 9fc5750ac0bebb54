"""Where a message splits into segments: capacities per UDH size and the cut points.

Cuts are greedy over atomic units, which gives the fewest segments for an ordered text: an
escape pair (GSM-7), a code point (UTF-16 surrogate pairs are never split) and, in UCS-2, a
whole grapheme cluster whenever the cluster fits in one segment.
"""

from __future__ import annotations

from worker.encoding.alphabet import ESC
from worker.encoding.graphemes import clusters

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
    if max(text) < "\u0300":
        return _even_ends(units, single, concat)  # no marks, no astral: units are code points
    ends: list[int] = []
    used = pos = 0
    for cluster in clusters(text):
        cost = utf16_units(cluster)
        # A cluster too long for any segment is split at code points instead.
        pieces = [(cluster, cost)] if cost <= concat else [(ch, utf16_units(ch)) for ch in cluster]
        for piece, piece_cost in pieces:
            if used + piece_cost > concat:
                ends.append(pos)
                used = 0
            used += piece_cost
            pos += len(piece)
    ends.append(pos)
    return ends
