"""Opt-out and opt-in keywords: which inbound texts take a number off a sender's list, or back.

A text is a keyword when the whole message, trimmed of white space and of trailing `.`, `!`,
`?` or `,`, is one of the active words, compared case-insensitively and without accents
(`Stop`, ` stop. `, `ARRÊT` and `arret` all match). A keyword inside a longer text (`please
stop`) is not one: Twilio and the US carriers' rules alike read only single-word replies.

The active words are the built-in lists of the languages in `SMSQ_MO_LANGUAGES` (default
`en`, Twilio's list) plus `SMSQ_MO_OPTOUT_KEYWORDS` and `SMSQ_MO_OPTIN_KEYWORDS`. A word in
both an opt-out and an opt-in list opts out (the safer reading).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from worker.settings import Settings


class Keyword(StrEnum):
    """What an inbound text asks for."""

    OPTOUT = "optout"
    OPTIN = "optin"


# Built-in lists per language: (opt-out words, opt-in words). English is Twilio's own list
# (STOP filtering); the others add the words their markets' senders are told to honour.
LANGUAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"),
           ("START", "UNSTOP", "YES")),
    "es": (("PARAR", "BAJA", "CANCELAR", "DETENER"), ("ALTA", "REANUDAR")),
    "fr": (("ARRET", "ARRETER", "ARRETE", "DESABONNER"), ("REPRENDRE",)),
    "de": (("STOPP", "ABMELDEN", "ENDE"), ("ANMELDEN",)),
    "it": (("BASTA", "ANNULLA", "DISISCRIVI"), ("ISCRIVI",)),
    "pt": (("PARAR", "SAIR", "CANCELAR"), ("VOLTAR",)),
}  # fmt: skip

_TRAILING = " \t\r\n.!?,"


def check_languages(languages: Sequence[str]) -> list[str]:
    """The language codes, lower-cased; ValueError naming an unknown one."""
    checked = [language.strip().lower() for language in languages if language.strip()]
    unknown = sorted(set(checked) - set(LANGUAGES))
    if unknown:
        raise ValueError(
            f"unknown keyword language(s) {', '.join(unknown)}; known: {', '.join(LANGUAGES)}"
        )
    return checked


def fold(text: str) -> str:
    """The form texts and keywords are compared in: trimmed, upper case, no accents."""
    stripped = text.strip().rstrip(_TRAILING).strip()
    decomposed = unicodedata.normalize("NFKD", stripped.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


@dataclass(frozen=True, slots=True)
class Keywords:
    """The active opt-out and opt-in words, folded."""

    optout: frozenset[str]
    optin: frozenset[str]

    @classmethod
    def of(
        cls,
        languages: Iterable[str],
        optout: Iterable[str] = (),
        optin: Iterable[str] = (),
    ) -> Keywords:
        outs = [word for lang in languages for word in LANGUAGES[lang][0]] + list(optout)
        ins = [word for lang in languages for word in LANGUAGES[lang][1]] + list(optin)
        folded_out = frozenset(fold(word) for word in outs if fold(word))
        return cls(folded_out, frozenset(fold(w) for w in ins if fold(w)) - folded_out)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keywords:
        return _from_settings(
            tuple(settings.mo_languages),
            tuple(settings.mo_optout_keywords),
            tuple(settings.mo_optin_keywords),
        )

    def match(self, text: str) -> Keyword | None:
        """What the whole text asks for, if it is a keyword."""
        word = fold(text)
        if word in self.optout:
            return Keyword.OPTOUT
        if word in self.optin:
            return Keyword.OPTIN
        return None


@lru_cache(maxsize=8)
def _from_settings(
    languages: tuple[str, ...], optout: tuple[str, ...], optin: tuple[str, ...]
) -> Keywords:
    return Keywords.of(languages, optout, optin)
