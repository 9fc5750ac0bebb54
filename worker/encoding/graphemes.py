"""An approximate extended grapheme cluster splitter (UAX #29), stdlib only.

It covers what matters for keeping user-perceived characters inside one segment: combining
and spacing marks, variation selectors (VS16), ZWJ sequences, emoji skin-tone modifiers,
regional-indicator pairs (flags), keycaps and tag sequences (subdivision flags). It does not
implement Hangul jamo sequences or Prepend characters; those split at code points.
"""

from __future__ import annotations

from unicodedata import category

_ZWJ = "\u200d"
_MARKS = frozenset({"Mn", "Me", "Mc"})  # VS16 (Mn) and the keycap U+20E3 (Me) are marks too
_RI_FIRST, _RI_LAST = "\U0001f1e6", "\U0001f1ff"


def _extends(ch: str) -> bool:
    """Whether `ch` attaches to the character before it (Extend, SpacingMark, ZWJ)."""
    if ch < "\u0300":  # nothing below the combining diacritics block extends
        return False
    o = ord(ch)
    return (
        category(ch) in _MARKS
        or o in (0x200C, 0x200D)
        or 0x1F3FB <= o <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= o <= 0xE007F  # tag characters
    )


def _is_control(ch: str) -> bool:
    return ch < " " or "\x7f" <= ch <= "\x9f"


def clusters(text: str) -> list[str]:
    """Split `text` into grapheme clusters; "".join(clusters(text)) == text."""
    out: list[str] = []
    start = 0
    prev = ""
    ri_run = 0  # regional indicators immediately before this character
    for i, ch in enumerate(text):
        is_ri = _RI_FIRST <= ch <= _RI_LAST
        joins = i > 0 and (
            (_extends(ch) and not _is_control(prev))
            or (prev == _ZWJ and not _is_control(ch))
            or (is_ri and ri_run % 2 == 1)
        )
        if i > 0 and not joins:
            out.append(text[start:i])
            start = i
        ri_run = ri_run + 1 if is_ri else 0
        prev = ch
    if text:
        out.append(text[start:])
    return out
