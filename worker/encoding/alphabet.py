"""The GSM 03.38 default alphabet and extension table, and the charsets built from shift tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from worker.encoding.udh import IEI_LOCKING_SHIFT, IEI_SINGLE_SHIFT

ESC = 0x1B
CR = 0x0D

# TS 23.038 §6.2.1, one row per high nibble. Position 0x1B is the escape to the single shift
# table, not a character: it is kept in the string so that indices equal septet codes.
DEFAULT_LOCKING = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# TS 23.038 §6.2.1.1, the extension table reached by ESC; each character costs two septets.
DEFAULT_SINGLE: Mapping[int, str] = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}  # fmt: skip


# eq=False: charsets are singletons compared by identity, and the dict fields are not hashable.
@dataclass(frozen=True, slots=True, eq=False)
class Charset:
    """One locking table with one single shift table: what a GSM-7 message can carry."""

    locking: int  # national language id of the locking shift table, 0 = default alphabet
    single: int  # national language id of the single shift table, 0 = default extension
    locking_table: str  # septet code -> character, "\x1b" at the escape position
    single_table: Mapping[int, str]  # code after ESC -> character
    to_septets: Mapping[int, str]  # ord(char) -> its septet(s), for str.translate
    basic: frozenset[str]  # characters costing one septet
    chars: frozenset[str]  # every character this charset can carry
    shift_ies: bytes  # the national language IEs every segment's UDH needs (TS 23.040)

    def offending(self, text: str) -> tuple[str, ...]:
        """The characters of `text` this charset cannot carry, unique, in order of appearance."""
        missing = set(text).difference(self.chars)
        return tuple(sorted(missing, key=text.index)) if missing else ()

    def septets(self, text: str) -> bytes:
        """`text` as septet codes (ESC + code for extension characters); it must fit."""
        return text.translate(self.to_septets).encode("latin-1")


def build_charset(
    locking: int, single: int, locking_table: str, single_table: Mapping[int, str]
) -> Charset:
    """Index a locking table and a single shift table for encoding."""
    to_septets: dict[int, str] = {}
    for code, ch in enumerate(locking_table):
        if code != ESC:
            to_septets[ord(ch)] = chr(code)
    basic = frozenset(chr(o) for o in to_septets)
    for code, ch in single_table.items():
        # A character in both tables goes in one septet through the locking table.
        to_septets.setdefault(ord(ch), chr(ESC) + chr(code))
    ies = b""
    if locking:
        ies += bytes((IEI_LOCKING_SHIFT, 1, locking))
    if single:
        ies += bytes((IEI_SINGLE_SHIFT, 1, single))
    return Charset(
        locking=locking,
        single=single,
        locking_table=locking_table,
        single_table=single_table,
        to_septets=to_septets,
        basic=basic,
        chars=frozenset(chr(o) for o in to_septets),
        shift_ies=ies,
    )


DEFAULT = build_charset(0, 0, DEFAULT_LOCKING, DEFAULT_SINGLE)

# The all-ASCII fast path works on bytes: one C-level pass to check, one to translate.
_ASCII_BASIC = bytes(sorted(ord(ch) for ch in DEFAULT.basic if ch.isascii()))
_ASCII_TO_SEPTET = bytes(
    DEFAULT_LOCKING.index(chr(b)) if chr(b) in DEFAULT.basic else 0 for b in range(256)
)


def ascii_septets(text: str) -> bytes | None:
    """Septets of an all-ASCII text made only of one-septet characters, else None."""
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    if raw.translate(None, _ASCII_BASIC):
        return None  # an extension character, a backtick or a control character
    return raw.translate(_ASCII_TO_SEPTET)


def is_gsm7(text: str) -> bool:
    """Whether the default alphabet and extension table carry every character of `text`."""
    return ascii_septets(text) is not None or DEFAULT.chars.issuperset(text)
