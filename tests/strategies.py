"""Hypothesis strategies for message texts: GSM-7, national tables, UCS-2 with emoji."""

from __future__ import annotations

from hypothesis import strategies as st

from worker.encoding.alphabet import DEFAULT
from worker.encoding.national import PORTUGUESE, SPANISH, TURKISH, charset_for

GSM7_CHARS = sorted(DEFAULT.chars)
EXTENSION_CHARS = sorted(DEFAULT.chars - DEFAULT.basic)
# Every character some Turkish, Spanish or Portuguese table carries: a text drawn from these
# may fit one charset, several, or none (then it goes UCS-2).
NATIONAL_CHARS = sorted(
    set().union(
        *(charset_for(lock, single).chars for lock, single in ((1, 1), (0, 2), (3, 3), (0, 3)))
    )
)
LANGUAGES = (TURKISH, SPANISH, PORTUGUESE)

# Pieces that stress the UCS-2 cutter: astral characters, ZWJ sequences, flags, skin tones,
# keycaps, tag sequences, combining marks, and a cluster longer than any segment.
UCS2_PIECES = (
    "a", "Ж", "ع", "漢", "ç", "`", "€", "\r", "\n",
    "😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🇫🇷", "🇩🇪🇫🇷", "1\ufe0f\u20e3",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "e\u0301", "a\u0308\u0301", "ب\u064e", "\u0915\u094d\u0937",
    "x" + "\u0301" * 80,
)  # fmt: skip


def _padded(pieces: st.SearchStrategy[str], fillers: str) -> st.SearchStrategy[str]:
    """Texts of `pieces` behind a run of one filler character, to land them on boundaries."""
    filler = st.sampled_from(fillers).flatmap(lambda ch: st.integers(0, 320).map(ch.__mul__))
    tail = st.lists(pieces, min_size=1, max_size=60).map("".join)
    return st.tuples(filler, tail).map("".join)


def gsm7_texts() -> st.SearchStrategy[str]:
    """Texts the default tables carry, rich in extension characters (two septets each)."""
    chars = st.sampled_from(GSM7_CHARS) | st.sampled_from(EXTENSION_CHARS)
    return st.text(chars, min_size=1, max_size=500) | _padded(chars, "a€")


def national_texts() -> st.SearchStrategy[str]:
    """Texts of characters from the national tables, mixed with default ones."""
    chars = st.sampled_from(NATIONAL_CHARS) | st.sampled_from(GSM7_CHARS)
    return st.text(chars, min_size=1, max_size=400) | _padded(chars, "aş")


def ucs2_texts() -> st.SearchStrategy[str]:
    """Texts with emoji, grapheme clusters and scripts outside GSM-7 (a few still fit GSM-7)."""
    anything = st.characters(codec="utf-8", exclude_characters="\x1b")
    pieces = st.sampled_from(UCS2_PIECES) | anything
    return _padded(pieces, "aЖ😀")


def any_texts() -> st.SearchStrategy[str]:
    """Any text the engine accepts (no raw ESC, not empty)."""
    return gsm7_texts() | national_texts() | ucs2_texts()
