"""Per-API-key limits, decided in Redis by one Lua script: a request rate and a daily quota.

- Rate (`smsq keys create --rate 10/s`): every authenticated call of the key counts, with
  bursts of one second's worth (or `--burst`). GCRA on Redis's clock, so every API process
  shares one limit; a refusal says exactly when the next call would pass.
- Daily quota (`--daily N`): messages per UTC day; `/sms/send` and `/otp/send` cost one, a
  batch costs every recipient it lists. A request that fails (4xx) is refunded.

Both are checked and taken in one script, so a refused call takes nothing from either; the
same script refuses a revoked key, so that the API may cache key lookups for seconds and a
revocation still holds from the next call on. The charge is also a Lua function that the
API's guarded writes include (`producer.gate`: check and write in one round trip);
the scripts are `worker/store/lua/charge.lua`, `charge_lib.lua`.

Keys: smsq:key:{id}:rate         the rate's theoretical arrival time (µs), expiring
      smsq:key:{id}:daily:{day}  messages counted on UTC day number `day`, kept two days
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from worker.errors import RateLimitedError, SmsqError
from worker.keys import ApiKey, burst_of
from worker.store import lua_scripts
from worker.store.keys import api_key_daily_key, api_key_key, api_key_rate_key

DAY_SECONDS = 86_400

REVOKED = 3


class RevokedKeyError(SmsqError):
    """The key was revoked (or deleted) after it was looked up (401)."""


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
        self._charge = lua_scripts.register(client, "charge", "charge_lib", with_prelude=False)

    def charge(self, key: ApiKey, messages: int = 0, *, call: bool = True) -> Charge:
        """Take one call (unless `call` is False: already counted) and `messages` from the
        key's limits, or raise `RateLimitedError` with the seconds until the call would pass;
        `RevokedKeyError` once the key is revoked."""
        now = time.time()
        cost = messages if key.daily else 0
        verdict, detail = self._charge(
            keys=[
                api_key_rate_key(key.id),
                api_key_daily_key(key.id, int(now // DAY_SECONDS)),
                api_key_key(key.id),
            ],
            args=charge_args(key, cost, call=call),
        )
        return check_verdict(key, cost, int(verdict), int(detail), now)

    def refund(self, charge: Charge) -> None:
        """Give back what a failed call took from the daily quota."""
        if charge.messages:
            self.redis.decrby(api_key_daily_key(charge.key_id, charge.day), charge.messages)

    def used_today(self, key_id: str) -> int:
        day = int(time.time() // DAY_SECONDS)
        return int(self.redis.get(api_key_daily_key(key_id, day)) or 0)


def charge_args(key: ApiKey, cost: int, *, call: bool = True) -> list[int]:
    """ARGV of `charge` (the Lua function) for `key`: interval, burst, cost, limit, ttl."""
    interval_us = round(1_000_000 / key.rate) if key.rate > 0 and call else 0
    return [interval_us, burst_of(key), cost, key.daily, 2 * DAY_SECONDS]


def check_verdict(key: ApiKey, cost: int, verdict: int, detail: int, now: float) -> Charge:
    """What a charge answered, as the `Charge` taken or the error that refuses the call."""
    day = int(now // DAY_SECONDS)
    if verdict == 1:
        raise RateLimitedError(
            f"this key is limited to {key.rate:g} requests per second",
            retry_after=detail / 1_000_000,
        )
    if verdict == 2:
        until_midnight = (day + 1) * DAY_SECONDS - now
        if cost > key.daily:
            message = f"this request needs {cost} messages, more than the daily quota"
        else:
            message = f"the daily quota of {key.daily} messages is used up ({detail} sent)"
        raise RateLimitedError(f"{message}; it renews at 00:00 UTC", retry_after=until_midnight)
    if verdict == REVOKED:
        raise RevokedKeyError("unknown or revoked API key")
    return Charge(key.id, day, cost)
