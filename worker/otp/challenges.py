"""OTP challenges in Redis: one per code sent, holding its MAC, its checks and its SMS.

Keys (all under `smsq:otp:`):
  {id}                              hash: a `Challenge`; expires `otp_retention_seconds` after
                                    the code does
  active:{key_id}:{purpose}:{to}    string: the id of the one active challenge (expires with it)
  cooldown:{key_id}:{purpose}:{to}  string with a TTL of the cooldown: a code went out recently

A check (`verify`) is one optimistic transaction (WATCH / MULTI): read the challenge, compare
the MAC in constant time in Python, then count the attempt and approve, or start over if another
check changed the challenge in between. So a code is approved once however many checks race,
and every wrong guess is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from worker.errors import RateLimitedError
from worker.otp.codes import CodeKeys
from worker.store import lua_scripts
from worker.store.keys import otp_active_key, otp_challenge_key

VERIFY_TRIES = 32  # optimistic retries when checks of one challenge race


class Verification(StrEnum):
    """Where a challenge stands (the `status` of `POST /otp/verify`, plus `superseded`)."""

    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"
    MAX_ATTEMPTS = "max_attempts"
    SUPERSEDED = "superseded"  # a newer code for the same number and purpose replaced it
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class Challenge:
    """One code sent: never the code itself, only its MAC."""

    id: str
    key_id: str
    to: str
    purpose: str
    mac: str
    message_id: str  # the SMS that carries the code now (a resend replaces it)
    created_at: int
    expires_at: int
    status: str = Verification.PENDING
    attempts: int = 0
    max_attempts: int = 5
    sends: int = 1
    resend_after: int = 0  # seconds; 0 = no scheduled resend
    approved_at: int | None = None
    client_ref: str = ""

    def to_hash(self) -> dict[str, str]:
        fields = {
            "id": self.id, "key_id": self.key_id, "to": self.to, "purpose": self.purpose,
            "mac": self.mac, "message_id": self.message_id, "created_at": str(self.created_at),
            "expires_at": str(self.expires_at), "status": str(self.status),
            "attempts": str(self.attempts), "max_attempts": str(self.max_attempts),
            "sends": str(self.sends), "resend_after": str(self.resend_after),
            "client_ref": self.client_ref,
        }  # fmt: skip
        if self.approved_at is not None:
            fields["approved_at"] = str(self.approved_at)
        return fields

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> Challenge:
        return cls(
            id=data["id"],
            key_id=data.get("key_id", ""),
            to=data.get("to", ""),
            purpose=data.get("purpose", ""),
            mac=data.get("mac", ""),
            message_id=data.get("message_id", ""),
            created_at=int(data.get("created_at") or 0),
            expires_at=int(data.get("expires_at") or 0),
            status=data.get("status", Verification.PENDING),
            attempts=int(data.get("attempts") or 0),
            max_attempts=int(data.get("max_attempts") or 5),
            sends=int(data.get("sends") or 1),
            resend_after=int(data.get("resend_after") or 0),
            approved_at=int(data["approved_at"]) if data.get("approved_at") else None,
            client_ref=data.get("client_ref", ""),
        )

    def standing(self, now: int) -> Verification:
        """The status as of `now`: a pending code past its expiry is expired."""
        if self.status == Verification.PENDING and now >= self.expires_at:
            return Verification.EXPIRED
        return Verification(self.status)

    @property
    def attempts_remaining(self) -> int:
        return max(0, self.max_attempts - self.attempts)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one check."""

    valid: bool
    status: Verification
    attempts_remaining: int
    challenge: Challenge | None = None  # as it was before this check, for the caller's follow-up


NOT_FOUND = Verdict(False, Verification.NOT_FOUND, 0)


def judge(
    challenge: Challenge | None, key_id: str, code: str, keys: CodeKeys, now: int
) -> tuple[Verdict, dict[str, str]]:
    """The verdict on `code` and the fields to write (empty: nothing changes, no attempt counted).

    A used (approved) code answers not_found, like one that never existed, so replaying a
    code can never look like a success; a superseded one answers expired.
    """
    if challenge is None or challenge.key_id != key_id:
        return NOT_FOUND, {}
    standing = challenge.standing(now)
    if standing == Verification.APPROVED:
        return NOT_FOUND, {}
    if standing in (Verification.EXPIRED, Verification.SUPERSEDED):
        return Verdict(False, Verification.EXPIRED, 0, challenge), {}
    if standing == Verification.MAX_ATTEMPTS or challenge.attempts >= challenge.max_attempts:
        return Verdict(False, Verification.MAX_ATTEMPTS, 0, challenge), {}
    attempts = challenge.attempts + 1
    remaining = challenge.max_attempts - attempts
    writes = {"attempts": str(attempts)}
    if keys.matches(challenge.id, code, challenge.mac):
        writes |= {"status": Verification.APPROVED, "approved_at": str(now)}
        return Verdict(True, Verification.APPROVED, remaining, challenge), writes
    if remaining == 0:
        writes["status"] = Verification.MAX_ATTEMPTS
        return Verdict(False, Verification.MAX_ATTEMPTS, 0, challenge), writes
    return Verdict(False, Verification.PENDING, remaining, challenge), writes


class ChallengeStore:
    """Typed access to challenges; one per process, thread-safe."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._supersede = lua_scripts.register(client, "otp_supersede", with_prelude=False)
        self._swap_message = lua_scripts.register(
            client, "otp_swap_message", with_prelude=False
        )

    def create(self, challenge: Challenge, retention_ms: int) -> str | None:
        """Store a challenge and make it the active one; returns the id it replaced, if any."""
        pipe = self.redis.pipeline(transaction=True)
        name = otp_challenge_key(challenge.id)
        pipe.hset(name, mapping=cast(dict[Any, Any], challenge.to_hash()))
        pipe.pexpireat(name, challenge.expires_at + retention_ms)
        pipe.set(
            otp_active_key(challenge.key_id, challenge.purpose, challenge.to),
            challenge.id,
            pxat=challenge.expires_at,
            get=True,
        )
        replaced = pipe.execute()[-1]
        return str(replaced) if replaced else None

    def load(self, challenge_id: str) -> Challenge | None:
        data = cast(dict[str, str], self.redis.hgetall(otp_challenge_key(challenge_id)))
        return Challenge.from_hash(data) if data else None

    def active_id(self, key_id: str, purpose: str, to: str) -> str | None:
        value = self.redis.get(otp_active_key(key_id, purpose, to))
        return str(value) if value else None

    def supersede(self, challenge_id: str) -> str | None:
        """Mark a pending challenge superseded; its current message id if it was pending."""
        moved = self._supersede(keys=[otp_challenge_key(challenge_id)])
        return str(moved) if moved else None

    def swap_message(
        self, challenge_id: str, old_message_id: str, new_message_id: str, now: int, max_sends: int
    ) -> bool:
        """Point a still-pending challenge at its resent SMS (the conditions:
        `worker/store/lua/otp_swap_message.lua`)."""
        return bool(
            self._swap_message(
                keys=[otp_challenge_key(challenge_id)],
                args=[old_message_id, new_message_id, now, max_sends],
            )
        )

    def verify(
        self, challenge_id: str, key_id: str, code: str, keys: CodeKeys, now: int
    ) -> Verdict:
        """Check `code` against the challenge, counting the attempt; atomic under concurrency."""
        name = otp_challenge_key(challenge_id)
        for _ in range(VERIFY_TRIES):
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(name)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    data = cast(dict[str, str], pipe.hgetall(name))
                    challenge = Challenge.from_hash(data) if data else None
                    verdict, writes = judge(challenge, key_id, code, keys, now)
                    if not writes:
                        return verdict
                    pipe.multi()
                    pipe.hset(name, mapping=cast(dict[Any, Any], writes))
                    pipe.execute()
                    return verdict
                except redis.WatchError:
                    continue
        raise RateLimitedError("too many simultaneous checks of this code", retry_after=1.0)
