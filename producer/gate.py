"""The door of every keyed call: who calls (API keys, cached for seconds), may they (revocation,
rate, daily quota), and for a single send the call's writes in the same round trip.

Looking a key up costs two round trips (key hash → id, then the record), so each API process
keeps what it found for `KEY_CACHE_SECONDS`: scopes and limits changed with `smsq keys` apply
within that time. Revocation is never cached: the first thing every keyed call does in Redis is
a script that refuses a revoked key, then takes the call from the key's limits —
`worker.quotas`' charge alone (`admit`), or for `POST /sms/send` the guarded write below, which
also stores and queues the message. A revoked key is refused from its next call on, and a send
with a cached key costs one round trip: check, charge, Idempotency-Key, refusals (the
recipient's opt-outs, `worker.optouts`) and writes together (`write_many`: the sends of many
calls share one pipelined round trip, `producer.intake`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from producer.auth import UnauthorizedError
from producer.idempotency import TTL_SECONDS, idempotency_key, replay
from worker.errors import SmsqError
from worker.keys import ApiKey, KeyStore
from worker.quotas import (
    DAY_SECONDS,
    Charge,
    Quotas,
    charge_args,
    check_verdict,
)
from worker.store import lua_scripts
from worker.store.keys import (
    NO_IDEMPOTENCY_KEY,
    api_key_daily_key,
    api_key_key,
    api_key_rate_key,
)

KEY_CACHE_SECONDS = 2.0
KEY_CACHE_SIZE = 10_000  # keys remembered per process; the cache starts over when full
IDEMPOTENT_REPLAY = 4
REFUSED = 5
# The guarded write (`worker/store/lua/guarded_write.lua`), with the key's charge.
GUARDED_WRITE = lua_scripts.source("guarded_write", "charge_lib", with_prelude=False)

class Gate:
    """Authenticates keys (cached), admits calls, runs guarded writes; one per API process."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeyStore,
        quotas: Quotas,
        *,
        ttl: float = KEY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.quotas = quotas
        self.ttl = ttl
        self.clock = clock
        self._found: dict[str, tuple[ApiKey, float]] = {}
        self.redis = client
        self._sha: str | None = None  # of GUARDED_WRITE, loaded on first use

    def cached(self, token: str) -> ApiKey | None:
        """The key for `token` if this process looked it up less than `ttl` ago (no I/O)."""
        entry = self._found.get(token)
        if entry is None or entry[1] < self.clock():
            return None
        return entry[0]

    def lookup(self, token: str) -> ApiKey:
        """The live key for `token`, from Redis; UnauthorizedError for unknown or revoked."""
        key = self.keys.authenticate(token)
        if key is None:
            self._found.pop(token, None)
            raise UnauthorizedError("unknown or revoked API key")
        if len(self._found) >= KEY_CACHE_SIZE:
            self._found.clear()
        self._found[token] = (key, self.clock() + self.ttl)
        return key

    def admit(self, key: ApiKey, messages: int = 0, *, call: bool = True) -> Charge:
        """Refuse a revoked key, then take the call (and `messages`) from its limits."""
        return self.quotas.charge(key, messages, call=call)

    def refund(self, charge: Charge) -> None:
        self.quotas.refund(charge)

    def write_many(self, calls: Sequence[GuardedWrite]) -> list[dict[str, Any] | Exception | None]:
        """Run each guarded write (`GuardedWrite`), all in one pipelined round trip; for each,
        in order: None (written), the first reply of a repeated Idempotency-Key, or the error
        that refused it (limits, revoked key, Idempotency-Key conflict)."""
        now = time.time()
        prepared = [self._script_call(call, now) for call in calls]
        answers = self._run(prepared)
        return [_outcome(call, answer, now) for call, answer in zip(calls, answers, strict=True)]

    def _script_call(self, call: GuardedWrite, now: float) -> list[Any]:
        """KEYS and ARGV of the script for one call, as one EVALSHA argument list."""
        key = call.key
        cost = call.messages if key.daily else 0
        record, idem_key = "", NO_IDEMPOTENCY_KEY
        if call.idempotency is not None:
            name, _body = call.idempotency
            idem_key = idempotency_key(key.id, name)
            record = orjson.dumps({"body": call.digest, "reply": call.reply}).decode()
        keys = [
            api_key_key(key.id), api_key_rate_key(key.id),
            api_key_daily_key(key.id, int(now // DAY_SECONDS)),
            idem_key, *(r.key for r in call.refusals), *(str(c[1]) for c in call.writes),
        ]  # fmt: skip
        args: list[Any] = [*charge_args(key, cost), record, TTL_SECONDS, len(call.refusals),
                           *(r.member for r in call.refusals)]  # fmt: skip
        for command in call.writes:
            args += [command[0], len(command) - 2, *command[2:]]
        return [len(keys), *keys, *args]

    def _run(self, prepared: list[list[Any]], *, again: bool = True) -> list[Any]:
        """EVALSHA each call in one pipeline (loading the script once more if Redis lost it:
        a restart); errors come back as values."""
        if self._sha is None:
            self._sha = str(self.redis.script_load(GUARDED_WRITE))
        pipe = self.redis.pipeline(transaction=False)
        for arguments in prepared:
            pipe.evalsha(self._sha, *arguments)
        answers = list(pipe.execute(raise_on_error=False))
        if again and any(isinstance(a, redis.exceptions.NoScriptError) for a in answers):
            self._sha = None
            return self._run(prepared, again=False)  # Redis restarted: it lost its scripts
        return answers


@dataclass(frozen=True, slots=True)
class Refusal:
    """A guarded write is refused with `error` when `member` is in the sorted set `key` (the
    recipient on an opt-out list)."""

    key: str
    member: str
    error: SmsqError


@dataclass(frozen=True, slots=True)
class GuardedWrite:
    """One call's writes (commands as redis-py stages them: name, key, arguments), to apply
    only if the key is live and its limits allow `messages` more. With `idempotency` (the
    Idempotency-Key and the request body), `reply` is kept for repeats of the call."""

    key: ApiKey
    writes: Sequence[Sequence[Any]]
    messages: int
    reply: dict[str, Any]
    idempotency: tuple[str, bytes] | None = None
    refusals: Sequence[Refusal] = ()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.idempotency[1]).hexdigest() if self.idempotency else ""


def _outcome(call: GuardedWrite, answer: Any, now: float) -> dict[str, Any] | Exception | None:
    if isinstance(answer, Exception):
        return answer
    verdict, detail = int(answer[0]), answer[1]
    try:
        if verdict == IDEMPOTENT_REPLAY:
            return replay(detail, call.digest)
        if verdict == REFUSED:
            return call.refusals[int(detail) - 1].error
        cost = call.messages if call.key.daily else 0
        check_verdict(call.key, cost, verdict, int(detail), now)
    except SmsqError as exc:
        return exc
    return None
