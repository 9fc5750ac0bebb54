"""Who owns an inbound message, and where its webhook goes.

An MO belongs to the API key that owns the number it was sent to (`smsq keys numbers add KEY
NUMBER [--mo-url URL]`); a key may also own `*`, every number no other key owns (one tenant's
deployment). The webhook goes to the number's own `mo-url`, else to the key's (`smsq keys
create --mo-url`, `smsq keys limits --mo-url`); with neither, the MO is stored and listed
(`GET /mo`) but not delivered. A number no key owns makes an MO without owner: stored and
counted (`smsq mo list --unowned`), never delivered. A revoked key owns nothing.

Numbers are kept as `canonical_number` makes them: E.164 when they read as international
numbers, else (short codes, national forms) their digits as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import phonenumbers
import redis

from worker.store.keys import api_key_key, key_numbers_key, mo_number_key

ANY_NUMBER = "*"  # a key owning this owns every number no other key owns


def canonical_number(text: str) -> str:
    """An address as smsq keeps it: E.164 (`+` and digits) when it parses as an international
    number (a leading `+`, `00` or country code), else stripped as given (`12345`, `SMSQ`)."""
    raw = text.strip()
    if raw == ANY_NUMBER:
        return raw
    digits = raw[1:] if raw.startswith("+") else raw
    digits = digits.replace(" ", "").replace("-", "")
    if digits.startswith("00"):
        digits = digits[2:]
    if digits.isdigit():
        try:
            number = phonenumbers.parse("+" + digits, None)
        except phonenumbers.NumberParseException:
            return raw
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return raw


@dataclass(frozen=True, slots=True)
class Owner:
    """The key an MO belongs to, and where its webhook goes ("": nowhere)."""

    key_id: str
    mo_url: str


class Owners:
    """The number registry on Redis; thread-safe, one per process."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def resolve(self, recipient: str) -> Owner | None:
        """The owner of MOs sent to `recipient` (a canonical number), or None."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(mo_number_key(recipient), "key_id", "mo_url")
        pipe.hmget(mo_number_key(ANY_NUMBER), "key_id", "mo_url")
        own, fallback = pipe.execute()
        key_id, number_url = own if own[0] else fallback
        if not key_id:
            return None
        revoked, key_url = cast(
            list[str | None], self.redis.hmget(api_key_key(key_id), "revoked", "mo_url")
        )
        if revoked is None or revoked == "1":  # deleted or revoked: owns nothing
            return None
        return Owner(key_id, number_url or key_url or "")

    def assign(self, key_id: str, number: str, mo_url: str = "") -> str | None:
        """Make `key_id` the owner of `number` (with its own `mo_url`, or the key's); the key
        that owned it before, if another (it loses it)."""
        key = mo_number_key(number)
        previous = cast(str | None, self.redis.hget(key, "key_id"))
        pipe = self.redis.pipeline(transaction=True)
        if previous and previous != key_id:
            pipe.srem(key_numbers_key(previous), number)
        pipe.delete(key)
        pipe.hset(key, mapping={"key_id": key_id, "mo_url": mo_url})
        pipe.sadd(key_numbers_key(key_id), number)
        pipe.execute()
        return previous if previous and previous != key_id else None

    def release(self, key_id: str, number: str) -> bool:
        """`key_id` no longer owns `number`; False if it did not."""
        key = mo_number_key(number)
        if self.redis.hget(key, "key_id") != key_id:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.srem(key_numbers_key(key_id), number)
        pipe.execute()
        return True

    def numbers(self, key_id: str) -> list[tuple[str, str]]:
        """The numbers `key_id` owns, each with its own mo-url ("": the key's)."""
        numbers = sorted(cast(set[str], self.redis.smembers(key_numbers_key(key_id))))
        pipe = self.redis.pipeline(transaction=False)
        for number in numbers:
            pipe.hget(mo_number_key(number), "mo_url")
        urls = pipe.execute() if numbers else []
        return [(number, url or "") for number, url in zip(numbers, urls, strict=True)]
