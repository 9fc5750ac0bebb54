"""National language shift tables (3GPP TS 23.038 Annex A): Turkish, Spanish, Portuguese.

The tables are literals here; tests check them against `gsmcodecs` (TS 23.038 v18.0.0). A locking
shift table replaces the default alphabet, a single shift table replaces the extension table.
Both are signalled per segment in the UDH (IEI 0x25 locking, 0x24 single) and cost UDH octets.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from worker.encoding.alphabet import (
    DEFAULT,
    DEFAULT_LOCKING,
    DEFAULT_SINGLE,
    Charset,
    build_charset,
)
from worker.errors import ValidationError

TURKISH, SPANISH, PORTUGUESE = 1, 2, 3

LANGUAGE_NAMES: Mapping[int, str] = {
    TURKISH: "turkish",
    SPANISH: "spanish",
    PORTUGUESE: "portuguese",
}
_ALIASES: Mapping[str, int] = {
    **{name: lang for lang, name in LANGUAGE_NAMES.items()},
    **{str(lang): lang for lang in LANGUAGE_NAMES},
    "tr": TURKISH,
    "es": SPANISH,
    "pt": PORTUGUESE,
}

# Annex A.3.1 and A.3.3; "\x1b" marks the escape position as in the default alphabet.
LOCKING_TABLES: Mapping[int, str] = {
    0: DEFAULT_LOCKING,
    TURKISH: (
        "@£$¥€éùıòÇ\nĞğ\rÅå"
        "Δ_ΦΓΛΩΠΨΣΘΞ\x1bŞşßÉ"
        " !\"#¤%&'()*+,-./"
        "0123456789:;<=>?"
        "İABCDEFGHIJKLMNO"
        "PQRSTUVWXYZÄÖÑÜ§"
        "çabcdefghijklmno"
        "pqrstuvwxyzäöñüà"
    ),
    PORTUGUESE: (
        "@£$¥êéúíóç\nÔô\rÁá"
        "Δ_ªÇÀ∞^\\€Ó|\x1bÂâÊÉ"
        " !\"#º%&'()*+,-./"
        "0123456789:;<=>?"
        "ÍABCDEFGHIJKLMNO"
        "PQRSTUVWXYZÃÕÚÜ§"
        "~abcdefghijklmno"
        "pqrstuvwxyzãõ`üà"
    ),
}

# Annex A.2.1 to A.2.3.
SINGLE_TABLES: Mapping[int, Mapping[int, str]] = {
    0: DEFAULT_SINGLE,
    TURKISH: {
        0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~",
        0x3E: "]", 0x40: "|", 0x47: "Ğ", 0x49: "İ", 0x53: "Ş", 0x63: "ç", 0x65: "€",
        0x67: "ğ", 0x69: "ı", 0x73: "ş",
    },
    SPANISH: {
        0x09: "ç", 0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[",
        0x3D: "~", 0x3E: "]", 0x40: "|", 0x41: "Á", 0x49: "Í", 0x4F: "Ó", 0x55: "Ú",
        0x61: "á", 0x65: "€", 0x69: "í", 0x6F: "ó", 0x75: "ú",
    },
    PORTUGUESE: {
        0x05: "ê", 0x09: "ç", 0x0A: "\f", 0x0B: "Ô", 0x0C: "ô", 0x0E: "Á", 0x0F: "á",
        0x12: "Φ", 0x13: "Γ", 0x14: "^", 0x15: "Ω", 0x16: "Π", 0x17: "Ψ", 0x18: "Σ",
        0x19: "Θ", 0x1F: "Ê", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~",
        0x3E: "]", 0x40: "|", 0x41: "À", 0x49: "Í", 0x4F: "Ó", 0x55: "Ú", 0x5B: "Ã",
        0x5C: "Õ", 0x61: "Â", 0x65: "€", 0x69: "í", 0x6F: "ó", 0x75: "ú", 0x7B: "ã",
        0x7C: "õ", 0x7F: "â",
    },
}  # fmt: skip


def resolve_language(national: str | int | None) -> int:
    """The language id for `national` ("turkish", "tr", 1, "1"…); 0 for None.

    Raises `ValidationError(field="national")` for a language we have no tables for.
    """
    if national is None:
        return 0
    key = str(national).strip().lower() if not isinstance(national, bool) else ""
    lang = _ALIASES.get(key)
    if lang is None:
        supported = ", ".join(LANGUAGE_NAMES.values())
        raise ValidationError(
            f"unknown national language {national!r} (supported: {supported})", field="national"
        )
    return lang


@cache
def charset_for(locking: int, single: int) -> Charset:
    """The charset for a pair of table ids; ids without tables fall back to the default ones.

    The fallback is what a handset does with a shift IE it does not support (TS 23.038 §6.2.1.2).
    """
    locking = locking if locking in LOCKING_TABLES else 0
    single = single if single in SINGLE_TABLES else 0
    if locking == single == 0:
        return DEFAULT
    return build_charset(locking, single, LOCKING_TABLES[locking], SINGLE_TABLES[single])


@cache
def candidates(lang: int) -> tuple[Charset, ...]:
    """The charsets to try for a language, fewest UDH octets first: default, single, both."""
    found = [DEFAULT]
    if lang:
        found.append(charset_for(0, lang))
        if lang in LOCKING_TABLES:
            found.append(charset_for(lang, lang))
    return tuple(found)
