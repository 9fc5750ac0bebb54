"""Geo permissions: the countries an API key may send messages (SMS and OTP codes) to.

A deployment allows a list of countries (`SMSQ_ALLOWED_COUNTRIES`, a short list of low-risk
destinations by default); a key may carry its own list, which replaces the deployment's for
that key (`smsq keys create --countries US,GB`; `*` = every country). Like Twilio's Messaging
geo permissions they apply to every message, not only to OTP codes: an SMS-pumping attack
needs only some way to make the system text an expensive destination. Countries are
`phonenumbers` regions (ISO 3166-1 alpha-2), so +1 876 is Jamaica (JM), not the US, and
+44 7911 is Guernsey (GG); numbers of no country (+800, +882, +883…) are region `001` and only
`*` allows them. See docs/security.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from worker.errors import ValidationError
from worker.settings import Settings

ALL = "*"
NON_GEOGRAPHIC = "001"  # phonenumbers' region of international numbers (+800, +882, +883…)


def check_countries(values: Iterable[str]) -> tuple[str, ...]:
    """Upper-case ISO 3166 regions (or `*` alone); ValueError naming any unknown one."""
    codes = tuple(dict.fromkeys(v.strip().upper() for v in values if v.strip()))
    if ALL in codes:
        if len(codes) > 1:
            raise ValueError("'*' (every country) cannot be combined with country codes")
        return codes
    unknown = sorted(set(codes) - phonenumbers.SUPPORTED_REGIONS)
    if unknown:
        raise ValueError(f"unknown country code(s) {', '.join(unknown)} (ISO 3166, e.g. US, GB)")
    return codes


@lru_cache(maxsize=65_536)  # campaigns and OTPs repeat numbers
def region_of(to: str) -> str:
    """The region of an E.164 number (`001` for international numbers, `ZZ` when unknown)."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(to, None)) or "ZZ"


def describe(to: str, region: str) -> str:
    """`+269… (KM, Comoros)`: the country calling code and the country, never the number."""
    from phonenumbers import geocoder  # only here: 0.3 s to import, needed only to refuse

    number = phonenumbers.parse(to, None)
    name = geocoder.country_name_for_number(number, "en") or "no country"
    return f"+{number.country_code}… ({region}, {name})"


@dataclass(frozen=True, slots=True)
class GeoPermissions:
    """The countries one key may send to; `countries` None means every country."""

    countries: frozenset[str] | None

    @classmethod
    def for_key(cls, key_countries: Sequence[str], settings: Settings) -> GeoPermissions:
        """The key's own list if it has one, else the deployment's."""
        chosen = key_countries or settings.allowed_countries
        return cls(None if ALL in chosen else frozenset(chosen))

    def check(self, to: str, field: str = "to") -> str:
        """The region of the E.164 number `to`; 422 (`country_not_allowed`) naming the
        country if this key may not send there."""
        region = region_of(to)
        if self.countries is not None and region not in self.countries:
            raise ValidationError(
                f"{describe(to, region)} is not in this key's allowed countries",
                field=field,
                code="country_not_allowed",
            )
        return region
