"""An approximate extended grapheme cluster splitter (UAX #29), stdlib only.

It covers what matters for keeping user-perceived characters inside one segment: combining
and spacing marks, variation selectors (VS16), ZWJ sequences, emoji skin-tone modifiers,
regional-indicator pairs (flags), keycaps and tag sequences (subdivision flags). It does not
implement Hangul jamo sequences or Prepend characters, which therefore split at code points.
Regular expressions find the few interesting characters, so a long text costs no Python step
per character.
"""

from __future__ import annotations

import re
from functools import cache
from unicodedata import category

_MARKS = ("Mn", "Me", "Mc")  # VS16 is Mn, the keycap U+20E3 is Me
ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # characters costing two UTF-16 units
_AFTER_ZWJ = re.compile("(?<=\u200d)[^\\x00-\\x1f\\x7f-\\x9f]")  # GB11, approximated
_RI_RUN = re.compile("[\U0001f1e6-\U0001f1ff]{2,}")  # regional indicators pair up into flags


@cache
def _bmp_extend() -> re.Pattern[str]:
    """BMP characters that attach to the one before: marks, ZWNJ, ZWJ.

    Built from `unicodedata` on first use (a few ms). Astral characters stay out of the class:
    sre tests astral ranges one by one, which made the search 40 times slower.
    """
    marks = [c for c in range(0x300, 0x10000) if category(chr(c)) in _MARKS]
    ranges: list[list[int]] = []
    for c in marks:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    spans = "".join(f"{chr(a)}-{chr(b)}" for a, b in ranges)
    return re.compile(f"[{spans}\u200c\u200d]")


def _astral_extends(ch: str) -> bool:
    o = ord(ch)
    return (
        0x1F3FB <= o <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= o <= 0xE007F  # tag characters
        or category(ch) in _MARKS
    )


def _is_control(ch: str) -> bool:
    return ch < " " or "\x7f" <= ch <= "\x9f"


def inner_positions(text: str) -> set[int]:
    """The offsets i where a cut before `text[i]` would split a grapheme cluster."""
    if not text or max(text) < "\u0300":  # nothing below U+0300 extends or pairs
        return set()
    extenders = [m.start() for m in _bmp_extend().finditer(text, 1)]
    extenders += [m.start() for m in ASTRAL.finditer(text, 1) if _astral_extends(m.group())]
    # A break is always allowed after a control (GB4).
    inner = {i for i in extenders if not _is_control(text[i - 1])}
    inner.update(m.start() for m in _AFTER_ZWJ.finditer(text))
    for run in _RI_RUN.finditer(text):
        inner.update(range(run.start() + 1, run.end(), 2))
    return inner


def clusters(text: str) -> list[str]:
    """Split `text` into grapheme clusters; "".join(clusters(text)) == text."""
    inner = inner_positions(text)
    starts = [i for i in range(len(text)) if i not in inner]
    if not starts:
        return []
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
