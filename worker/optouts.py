"""Opt-out lists: numbers that said STOP, and the check every send makes against them.

Each API key has its own list (`optout:{key id}`, a sorted set of E.164 numbers scored by when
they opted out), filled by the inbound keywords of the MOs it owns (`worker.mo`) and by `smsq
optouts add`. The deployment has one more (`optout:*`): numbers that said STOP to a number no
key owns, which every key's sends respect (smsq cannot tell whose messages they meant).

A send to a number on its key's list or on the deployment's is refused with `OptedOutError`
(422 `opted_out`, naming `to`); a batch reports it per recipient. OTP codes (`/otp/send`)
follow the same rule unless the key's policy exempts transactional traffic (`smsq keys
limits KEY --otp-optout exempt`); the default refuses them too, as Twilio does (a STOP blocks
every message from that sender, codes included).

The check is one round trip (ZSCORE, or ZMSCORE for a batch chunk, on both lists, pipelined);
a single send through the API makes it inside the script that writes the message (`lists`,
`producer.gate.Refusal`): no round trip of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis

from worker.clock import now_ms
from worker.errors import OptedOutError
from worker.keys import OTP_OPTOUT_EXEMPT, OTP_OPTOUT_FIELD
from worker.store.keys import api_key_key, optout_key

DEPLOYMENT = "*"  # the owner of the deployment-wide list
Client = redis.Redis | redis.client.Pipeline


class OptOuts:
    """Opt-out lists on Redis; thread-safe, one per process."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, owner: str, number: str, *, client: Client | None = None) -> bool:
        """Put a number on `owner`'s list (a key id, or `DEPLOYMENT`); False if it was. With
        `client` (a pipeline), queued there (the answer comes with the pipeline's)."""
        added = (client or self.redis).zadd(optout_key(owner), {number: now_ms()}, nx=True)
        return bool(added)

    def remove(self, owner: str, number: str, *, client: Client | None = None) -> bool:
        """Take a number off `owner`'s list; False if it was not on it (`client`: as `add`)."""
        return bool((client or self.redis).zrem(optout_key(owner), number))

    def numbers(self, owner: str) -> list[tuple[str, int]]:
        """The numbers on `owner`'s list with when they opted out (ms), oldest first."""
        found = cast(
            list[tuple[str, float]], self.redis.zrange(optout_key(owner), 0, -1, withscores=True)
        )
        return [(number, int(score)) for number, score in found]

    def refused(
        self, key_id: str, numbers: Sequence[str], *, transactional: bool = False
    ) -> list[bool]:
        """For each number, whether a send of `key_id` to it is refused (one round trip).
        `transactional`: OTP codes, exempt when the key's policy says so."""
        if not numbers:
            return []
        pipe = self.redis.pipeline(transaction=False)
        if len(numbers) == 1:
            pipe.zscore(optout_key(key_id), numbers[0])
            pipe.zscore(optout_key(DEPLOYMENT), numbers[0])
        else:
            pipe.zmscore(optout_key(key_id), list(numbers))
            pipe.zmscore(optout_key(DEPLOYMENT), list(numbers))
        if transactional:
            pipe.hget(api_key_key(key_id), OTP_OPTOUT_FIELD)
        replies = pipe.execute()
        if transactional and replies[2] == OTP_OPTOUT_EXEMPT:
            return [False] * len(numbers)
        mine, everyone = replies[0], replies[1]
        if len(numbers) == 1:
            return [mine is not None or everyone is not None]
        return [a is not None or b is not None for a, b in zip(mine, everyone, strict=True)]

    @staticmethod
    def lists(key_id: str) -> tuple[str, str]:
        """The sorted sets a send of `key_id` must not find its recipient in."""
        return optout_key(key_id), optout_key(DEPLOYMENT)

    def check(self, key_id: str, number: str, *, transactional: bool = False) -> None:
        """Raise `OptedOutError` when a send of `key_id` to `number` is refused."""
        if self.refused(key_id, [number], transactional=transactional)[0]:
            raise OptedOutError(number)
