"""Opt-in smart encoding: look-alike punctuation and spaces replaced by their GSM-7 equivalents.

Built from Twilio's published smart-encoding list and CLDR's Latin-ASCII transform, kept
conservative: punctuation, spaces and fullwidth ASCII only, never letters. Deliberately unlike
Twilio's calculator map: ‹ is <, › is > (CLDR), a space-like character becomes one space (not
two), TAB is left alone (not seven spaces), and … is "..." (it is not a no-break space).
"""

from __future__ import annotations

from collections.abc import Mapping

_TO_DOUBLE_QUOTE = "«»“”„‟″‶〝〞ʺ"
_TO_APOSTROPHE = "‘’‚‛′‵ʹʻʼʽˈˊˋ´`"
_TO_HYPHEN = "‐‑‒–—―−⁃﹘﹣"
# NBSP, the U+2000 block of spaces, narrow NBSP, medium mathematical space, ideographic space.
_TO_SPACE = "\u00a0" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"


def _table() -> Mapping[int, str]:
    table: dict[int, str] = {}
    # Fullwidth forms U+FF01..U+FF5E are ASCII U+0021..U+007E shifted by 0xFEE0.
    for o in range(0xFF01, 0xFF5F):
        table[o] = chr(o - 0xFEE0)
    table[0xFF40] = "'"  # fullwidth grave accent: the ASCII backtick is not GSM either
    table.update({0xFFE1: "£", 0xFFE5: "¥"})  # fullwidth pound and yen signs
    for chars, target in (
        (_TO_DOUBLE_QUOTE, '"'),
        (_TO_APOSTROPHE, "'"),
        (_TO_HYPHEN, "-"),
        (_TO_SPACE, " "),
    ):
        table.update({ord(ch): target for ch in chars})
    table.update({ord("…"): "...", ord("‹"): "<", ord("›"): ">"})
    return table


SMART_MAP = _table()


def smart_map(text: str) -> str:
    """`text` with every mapped look-alike replaced; unmapped characters are kept."""
    if text.isascii() and "`" not in text:
        return text  # nothing to map: skip the per-character translate
    return text.translate(SMART_MAP)
