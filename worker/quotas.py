"""Per-API-key limits, decided in Redis by one Lua script: a request rate and a daily quota.

- Rate (`smsq keys create --rate 10/s`): every authenticated call of the key counts, with
  bursts of one second's worth (or `--burst`). GCRA on Redis's clock, so every API process
  shares one limit; a refusal says exactly when the next call would pass.
- Daily quota (`--daily N`): messages per UTC day; `/sms/send` and `/otp/send` cost one, a
  batch costs every recipient it lists. A request that fails (4xx) is refunded.

Both are checked and taken in one script, so a refused call takes nothing from either.

Keys: smsq:key:{id}:rate         the rate's theoretical arrival time (µs), expiring
      smsq:key:{id}:daily:{day}  messages counted on UTC day number `day`, kept two days
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from worker.errors import RateLimitedError
from worker.keys import ApiKey, burst_of

DAY_SECONDS = 86_400

# KEYS[1] rate TAT, KEYS[2] daily counter; ARGV interval_us (0 = no rate), burst, cost,
# daily limit (0 = none), counter ttl. Returns {0, 0} (taken), {1, wait_us} (rate) or
# {2, used} (daily quota).
CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local new_tat = nil
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  new_tat = tat + interval
  local wait = new_tat - tonumber(ARGV[2]) * interval - now
  if wait > 0 then return {1, wait} end
end
local cost = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
if limit > 0 and cost > 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used + cost > limit then return {2, used} end
  redis.call('INCRBY', KEYS[2], cost)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
end
if new_tat then
  local ttl_ms = math.floor((new_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
end
return {0, 0}
"""


def rate_key(key_id: str) -> str:
    return f"smsq:key:{key_id}:rate"


def daily_key(key_id: str, day: int) -> str:
    return f"smsq:key:{key_id}:daily:{day}"


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call took from its key's daily quota (to give back if the call fails)."""

    key_id: str
    day: int
    messages: int


class Quotas:
    """Checks and takes a key's rate and daily quota; one per API process."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._charge = client.register_script(CHARGE)

    def charge(self, key: ApiKey, messages: int = 0) -> Charge:
        """Take one call and `messages` from the key's limits, or raise `RateLimitedError`
        with the seconds until the call would pass."""
        now = time.time()
        day = int(now // DAY_SECONDS)
        cost = messages if key.daily else 0
        interval_us = round(1_000_000 / key.rate) if key.rate > 0 else 0
        verdict, detail = self._charge(
            keys=[rate_key(key.id), daily_key(key.id, day)],
            args=[interval_us, burst_of(key), cost, key.daily, 2 * DAY_SECONDS],
        )
        if int(verdict) == 1:
            raise RateLimitedError(
                f"this key is limited to {key.rate:g} requests per second",
                retry_after=int(detail) / 1_000_000,
            )
        if int(verdict) == 2:
            until_midnight = (day + 1) * DAY_SECONDS - now
            if cost > key.daily:
                message = f"this request needs {cost} messages, more than the daily quota"
            else:
                message = f"the daily quota of {key.daily} messages is used up ({int(detail)} sent)"
            raise RateLimitedError(f"{message}; it renews at 00:00 UTC", retry_after=until_midnight)
        return Charge(key.id, day, cost)

    def refund(self, charge: Charge) -> None:
        """Give back what a failed call took from the daily quota."""
        if charge.messages:
            self.redis.decrby(daily_key(charge.key_id, charge.day), charge.messages)

    def used_today(self, key_id: str) -> int:
        day = int(time.time() // DAY_SECONDS)
        return int(self.redis.get(daily_key(key_id, day)) or 0)
