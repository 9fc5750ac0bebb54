"""Who may get OTP codes and how often: destination checks and send limits (SMS pumping).

Every limit is counted per API key, so one tenant's traffic never uses up another's: per
(key, number), (key, number range), (key, country), per key over a short window, and per key
per UTC day. On top, a **ceiling** per destination (number, range, country) counts the sends of
every key together. It sits well above any one key's limit (the settings insist), so a key that
keeps to its own limits is refused by it only when many keys at once send to that destination:
an attack on the destination itself, which the refusal says (`destination_under_attack`).

Limits are sliding-window logs: one sorted set per subject holding a member per send scored by
its time, trimmed to the window on every check; exact, and the memory is bounded by the count.
The daily cap is a counter per key and UTC day (it may be large). The cooldown and every limit
are checked and counted in one Lua script, all or nothing: a refused send counts nowhere, so a
key refused by its own limits adds nothing to the shared ceilings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import phonenumbers
import redis

from worker.errors import RateLimitedError, ValidationError
from worker.geo import region_of
from worker.settings import Settings
from worker.store import lua_scripts
from worker.store.keys import OTP_NO_COOLDOWN_KEY, otp_limit_key

__all__ = ["Limit", "SendGate", "check_destination", "number_prefix", "region_of", "send_limits"]

PREFIX_DIGITS_DROPPED = 4  # numbers sharing all but their last 4 digits share a prefix limit
DAY_MS = 86_400_000

_REASONS = {
    "cooldown": "a code was sent to this number for this purpose moments ago",
    "number": "too many codes sent to this number with this API key",
    "prefix": "too many codes sent to numbers in this range with this API key",
    "country": "too many codes sent to this country with this API key",
    "key": "too many codes sent with this API key",
    "day": "this API key's daily OTP cap is reached; it renews at 00:00 UTC",
}
_DESTINATIONS = {"number": "this number", "prefix": "this number range", "country": "this country"}
UNDER_ATTACK = "destination_under_attack"

def number_prefix(to: str) -> str:
    """The number without its last 4 digits: the range SMS pumping walks through."""
    return to[:-PREFIX_DIGITS_DROPPED]


def check_destination(to: str, settings: Settings) -> str:
    """The region of an E.164 number that may get codes; ValidationError (field `to`) if not.

    The key's geo permissions apply to every message (`worker.geo`); these are the OTP-only
    checks on top: `SMSQ_OTP_ALLOWED_COUNTRIES` and the refused number types.
    """
    number = phonenumbers.parse(to, None)
    region = region_of(to)
    if settings.otp_allowed_countries and region not in settings.otp_allowed_countries:
        raise ValidationError(
            f"codes to numbers in {region} are not enabled",
            field="to",
            code="country_not_allowed",
        )
    kind = phonenumbers.PhoneNumberType.to_string(phonenumbers.number_type(number))
    if kind in settings.otp_blocked_number_types:
        raise ValidationError(
            f"codes are not sent to {kind.lower().replace('_', '-')} numbers",
            field="to",
            code="number_type_refused",
        )
    return region


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` sends per `window` seconds for one subject: of one key, or of every key
    together (`shared`, a ceiling). `daily`: a counter whose window ends at 00:00 UTC."""

    kind: str  # number, prefix, country, key, day
    subject: str
    count: int
    window: int
    shared: bool = False
    daily: bool = False

    @property
    def key(self) -> str:
        return otp_limit_key(self.kind, self.subject, shared=self.shared)

    def window_ms(self, now: int) -> int:
        return DAY_MS - now % DAY_MS if self.daily else self.window * 1000


def send_limits(settings: Settings, *, to: str, region: str, key_id: str, now: int) -> list[Limit]:
    """The limits one send to `to` with key `key_id` counts against (those switched on)."""
    s = settings
    destinations = [
        ("number", to, s.otp_limit_number, s.otp_ceiling("number"), s.otp_limit_number_window),
        ("prefix", number_prefix(to), s.otp_limit_prefix, s.otp_ceiling("prefix"),
         s.otp_limit_prefix_window),
        ("country", region, s.otp_limit_country, s.otp_ceiling("country"),
         s.otp_limit_country_window),
    ]  # fmt: skip
    candidates = [
        *(Limit(kind, f"{key_id}:{subject}", own, window)
          for kind, subject, own, _, window in destinations),
        Limit("key", key_id, s.otp_limit_key, s.otp_limit_key_window),
        Limit("day", f"{key_id}:{now // DAY_MS}", s.otp_limit_key_daily, 86_400, daily=True),
        *(Limit(kind, subject, ceiling, window, shared=True)
          for kind, subject, _, ceiling, window in destinations),
    ]  # fmt: skip
    return [limit for limit in candidates if limit.count > 0]


class SendGate:
    """Admits a send only if its cooldown is over and every limit has room; counts it."""

    def __init__(self, client: redis.Redis) -> None:
        self._admit = lua_scripts.register(client, "otp_admit", with_prelude=False)

    def admit(
        self,
        limits: list[Limit],
        member: str,
        now: int,
        *,
        cooldown_key: str = "",
        cooldown_ms: int = 0,
    ) -> None:
        """Count one send everywhere, or raise RateLimitedError (with the wait) and count none."""
        ordered = sorted(limits, key=lambda limit: limit.shared)  # the key's own first
        own = sum(not limit.shared for limit in ordered)
        args: list[str | int] = [now, member, cooldown_ms if cooldown_key else 0, own]
        for limit in ordered:
            args += [limit.count, limit.window_ms(now), int(limit.daily)]
        keys = [cooldown_key or OTP_NO_COOLDOWN_KEY, *(limit.key for limit in ordered)]
        index, wait_ms = cast(list[int], self._admit(keys=keys, args=args))
        if index < 0:
            return
        retry_after = max(1.0, wait_ms / 1000)
        if index == 0:
            raise RateLimitedError(_REASONS["cooldown"], retry_after=retry_after)
        refused = ordered[index - 1]
        if not refused.shared:
            raise RateLimitedError(_REASONS[refused.kind], retry_after=retry_after)
        raise RateLimitedError(
            f"{_DESTINATIONS[refused.kind]} is getting codes from many senders at once and looks "
            "under attack (SMS pumping): codes to it are held for every API key for now",
            retry_after=retry_after,
            code=UNDER_ATTACK,
        )
