"""Who may get OTP codes and how often: destination checks and send limits (SMS pumping).

Limits are sliding-window logs: one sorted set per subject (`smsq:otp:limit:{kind}:{subject}`)
holding a member per send scored by its time, trimmed to the window on every check. Exact, and
its memory is bounded by the limit. The cooldown and every limit are checked and counted in one
Lua script, all or nothing: a refused send consumes no quota anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import phonenumbers
import redis

from worker.errors import RateLimitedError, ValidationError
from worker.settings import Settings

LIMIT_PREFIX = "smsq:otp:limit:"
PREFIX_DIGITS_DROPPED = 4  # numbers sharing all but their last 4 digits share a prefix limit

_REASONS = {
    "cooldown": "a code was sent to this number for this purpose moments ago",
    "number": "too many codes sent to this number",
    "prefix": "too many codes sent to numbers in this range",
    "key": "too many codes sent with this API key",
    "country": "too many codes sent to this country",
}

# KEYS[1]: the cooldown key (its value: when the cooldown ends); KEYS[2..]: the limit logs.
# ARGV: now ms, member, cooldown ms (0 = none), then per log its count and window ms.
# Returns {index, wait ms}: 0 = the cooldown, i = the log KEYS[i+1], -1 = admitted and counted.
ADMIT = """
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[3])
if cooldown > 0 then
  local until_ms = tonumber(redis.call('GET', KEYS[1]) or '0')
  if until_ms > now then return {0, until_ms - now} end
end
local worst, wait = -1, 0
for i = 2, #KEYS do
  local count, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local n = redis.call('ZCARD', KEYS[i])
  if n >= count then
    local freeing = redis.call('ZRANGE', KEYS[i], n - count, n - count, 'WITHSCORES')
    local until_free = tonumber(freeing[2]) + window - now
    if worst < 0 or until_free > wait then worst, wait = i - 1, until_free end
  end
end
if worst >= 0 then return {worst, wait} end
if cooldown > 0 then redis.call('SET', KEYS[1], now + cooldown, 'PX', cooldown) end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], ARGV[2 * i + 1])
end
return {-1, 0}
"""


def number_prefix(to: str) -> str:
    """The number without its last 4 digits: the range SMS pumping walks through."""
    return to[:-PREFIX_DIGITS_DROPPED]


def region_of(to: str) -> str:
    """The ISO 3166 region of an E.164 number (`ZZ` when unknown)."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(to, None)) or "ZZ"


def check_destination(to: str, settings: Settings) -> str:
    """The region of an E.164 number that may get codes; ValidationError (field `to`) if not."""
    number = phonenumbers.parse(to, None)
    region = phonenumbers.region_code_for_number(number) or "ZZ"
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
    """At most `count` sends per `window` seconds for one subject."""

    kind: str  # number, prefix, key, country
    subject: str
    count: int
    window: int

    @property
    def key(self) -> str:
        return f"{LIMIT_PREFIX}{self.kind}:{self.subject}"


def send_limits(settings: Settings, *, to: str, region: str, key_id: str) -> list[Limit]:
    """The limits one send to `to` with key `key_id` counts against (those switched on)."""
    candidates = [
        Limit("number", to, settings.otp_limit_number, settings.otp_limit_number_window),
        Limit(
            "prefix", number_prefix(to), settings.otp_limit_prefix,
            settings.otp_limit_prefix_window,
        ),
        Limit("key", key_id, settings.otp_limit_key, settings.otp_limit_key_window),
        Limit("country", region, settings.otp_limit_country, settings.otp_limit_country_window),
    ]  # fmt: skip
    return [limit for limit in candidates if limit.count > 0]


class SendGate:
    """Admits a send only if its cooldown is over and every limit has room; counts it."""

    def __init__(self, client: redis.Redis) -> None:
        self._admit = client.register_script(ADMIT)

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
        args: list[str | int] = [now, member, cooldown_ms if cooldown_key else 0]
        for limit in limits:
            args += [limit.count, limit.window * 1000]
        keys = [cooldown_key or f"{LIMIT_PREFIX}none", *(limit.key for limit in limits)]
        index, wait_ms = cast(list[int], self._admit(keys=keys, args=args))
        if index < 0:
            return
        kind = "cooldown" if index == 0 else limits[index - 1].kind
        raise RateLimitedError(_REASONS[kind], retry_after=max(1.0, wait_ms / 1000))
