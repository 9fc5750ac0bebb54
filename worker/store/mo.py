"""The store's side of inbound (MO) messages: records, parts, indexes, webhook claims.

An MO is a hash `mo:{id}` (`MoRecord`'s fields, plus its webhook's delivery: `state` —
`open`, `sending`, `sent`, `gone`, `dead`, or none when it has no webhook — `attempts`,
`lease`, `not_before`, `first_attempt_at`, `base`, `why`, `status_code`). It is kept
`RETENTION_DAYS`, listed through the owner's indexes (sorted sets of ids, all scores 0, so
ordered by id: ids start with their receipt time). Multipart MOs wait part by part in a hash
until the last one comes (`lua/mo_part.lua`) or their wait is over (`take_parts`). Webhook
claims and settlements mirror client receipts' (`lua/mo_claim.lua`, `lua/mo_settle.lua`): the
receipt engine delivers MO webhooks in their endpoints' queues as `m:{id}` members.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.store import lua_scripts
from worker.store.keys import (
    COUNTERS_KEY,
    MO_DEAD_KEY,
    MO_WATCH_KEY,
    SCHEDULE_KEY,
    mo_index_key,
    mo_key,
    mo_seen_key,
)

Client = redis.Redis | redis.client.Pipeline
RETENTION_DAYS = 30
RETENTION_MS = RETENTION_DAYS * 24 * 3600 * 1000
NO_OWNER = "-"  # the index of MOs no key owns
SEEN_TTL_SECONDS = 2 * 24 * 3600  # a carrier repeating an MO does so within hours, not days
MAX_PAGE = 1000


def new_mo_id(received_at: int) -> str:
    """An MO id: 32 lower-case hex characters, the first 12 its receipt time (ms)."""
    return f"{received_at:012x}{uuid.uuid4().hex[:20]}"


def id_floor(at_ms: int) -> str:
    """The smallest id of an MO received at or after `at_ms`."""
    return f"{max(at_ms, 0):012x}"


@dataclass(frozen=True, slots=True)
class MoRecord:
    """One inbound message as stored (what `GET /mo` shows and its webhook says)."""

    id: str
    sender: str  # `from`: the handset
    recipient: str  # `to`: our number
    text: str
    carrier: str
    received_at: int  # ms
    key_id: str = ""  # the owner ("": none)
    mo_url: str = ""  # where its webhook goes ("": nowhere)
    carrier_id: str = ""
    keyword: str = ""  # `optout`, `optin` or ""
    parts: int = 1
    missing: str = ""  # parts that never came, `2,5` ("" when whole)
    state: str = ""  # its webhook's delivery (module doc)
    attempts: int = 0
    not_before: int = 0  # its webhook's next attempt is due then (ms)

    def to_hash(self) -> dict[str, str]:
        fields = {
            "id": self.id, "from": self.sender, "to": self.recipient, "text": self.text,
            "carrier": self.carrier, "received_at": str(self.received_at), "key_id": self.key_id,
            "mo_url": self.mo_url, "carrier_id": self.carrier_id, "keyword": self.keyword,
            "parts": str(self.parts), "missing": self.missing,
        }  # fmt: skip
        if self.state:
            fields["state"] = self.state
        return fields

    @classmethod
    def from_hash(cls, data: Mapping[str, str]) -> MoRecord:
        return cls(
            id=data["id"],
            sender=data.get("from", ""),
            recipient=data.get("to", ""),
            text=data.get("text", ""),
            carrier=data.get("carrier", ""),
            received_at=int(data.get("received_at") or 0),
            key_id=data.get("key_id", ""),
            mo_url=data.get("mo_url", ""),
            carrier_id=data.get("carrier_id", ""),
            keyword=data.get("keyword", ""),
            parts=int(data.get("parts") or 1),
            missing=data.get("missing", ""),
            state=data.get("state", ""),
            attempts=int(data.get("attempts") or 0),
            not_before=int(data.get("not_before") or 0),
        )


@dataclass(frozen=True, slots=True)
class MoClaim:
    """An MO's webhook taken for one delivery attempt, with everything the attempt needs."""

    record: MoRecord
    attempt: int
    first_attempt_at: int | None
    base: int  # attempts before a replay


@dataclass(frozen=True, slots=True)
class MoSettlement:
    """What one attempt of a claimed MO webhook came to (`lua/mo_settle.lua`)."""

    mo_id: str
    outcome: str  # sent, gone, dead, retry
    due: int = 0  # retry: when
    why: str = ""  # retry: what the attempt met
    status_code: int | None = None


@dataclass(frozen=True, slots=True)
class Parts:
    """A multipart MO's parts: complete, or what came by the end of the wait."""

    total: int
    texts: dict[int, str]  # seq -> text
    first_at: int  # when its first part came (ms)
    carrier_id: str

    @property
    def missing(self) -> list[int]:
        return [seq for seq in range(1, self.total + 1) if seq not in self.texts]

    @property
    def text(self) -> str:
        return "".join(self.texts[seq] for seq in sorted(self.texts))


class MoStore:
    """Typed access to MO records, parts and webhook state; thread-safe, one per process."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._part = lua_scripts.register(client, "mo_part")
        self._claim = lua_scripts.register(client, "mo_claim")
        self._settle = lua_scripts.register(client, "mo_settle")
        self._replay = lua_scripts.register(client, "mo_replay")

    # -- intake -----------------------------------------------------------------------------
    def seen(self, carrier: str, carrier_id: str, mo_id: str) -> str | None:
        """Remember that the carrier's `carrier_id` is MO `mo_id`; the MO stored for it
        before, if the carrier sent it already (then nothing is remembered)."""
        key = mo_seen_key(carrier, carrier_id)
        if self.redis.set(key, mo_id, nx=True, ex=SEEN_TTL_SECONDS):
            return None
        return cast(str | None, self.redis.get(key)) or ""

    def exists(self, mo_id: str) -> bool:
        """Whether MO `mo_id` is stored."""
        return bool(self.redis.exists(mo_key(mo_id)))

    def forget_seen(self, carrier: str, carrier_id: str) -> None:
        """Undo `seen` (a part that is kept, not stored as an MO yet)."""
        self.redis.delete(mo_seen_key(carrier, carrier_id))

    def add_part(
        self,
        parts_key: str,
        seq: int,
        total: int,
        text: str,
        received_at: int,
        carrier_id: str,
        flush: tuple[str, int],
        ttl_ms: int,
    ) -> Parts | None:
        """Keep one part; every part once the last came (None while some are missing, or
        when another caller completed it). `flush`: the schedule entry that takes the parts
        when the wait ends, and when. The caller stores the MO and deletes the parts in one
        transaction (`create(..., parts_key=…)`), or gives them back (`unclaim_parts`)."""
        entry, due = flush
        reply = self._part(
            keys=[parts_key, SCHEDULE_KEY],
            args=[seq, text, total, ttl_ms, received_at, carrier_id, entry, due],
        )
        if not int(reply[0]):
            return None
        texts = {seq: str(text) for seq, text in enumerate(reply[3:], start=1)}
        return Parts(total, texts, int(reply[1]), str(reply[2]))

    def unclaim_parts(self, parts_key: str) -> None:
        """The MO of complete parts could not be stored: let the next part (a carrier's retry)
        or the flush complete it."""
        self.redis.hdel(parts_key, "_claimed")

    def take_parts(self, parts_key: str, total: int) -> Parts | None:
        """Whatever parts came, the hash deleted (the wait is over); None when none are left
        (all came and were stored)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(parts_key)
        pipe.delete(parts_key)
        found = cast(dict[str, str], pipe.execute()[0])
        if not found:
            return None
        texts = {int(k): v for k, v in found.items() if k.isdigit() and 1 <= int(k) <= total}
        return Parts(total, texts, int(found.get("_first") or 0), found.get("_carrier_id", ""))

    def create(
        self,
        record: MoRecord,
        *,
        counter: str,
        watch_at: int | None,
        parts_key: str = "",
        also: Callable[[redis.client.Pipeline], None] | None = None,
    ) -> None:
        """Store an MO, index it under its owner (and the number it was sent to) and count it,
        in one transaction; `watch_at`: its webhook is due then (the reconciler's watch);
        `parts_key`: the parts it was made of, deleted; `also` adds its own writes."""
        owner = record.key_id or NO_OWNER
        floor = id_floor(record.received_at - RETENTION_MS)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(mo_key(record.id), mapping=cast(dict[Any, Any], record.to_hash()))
        pipe.pexpire(mo_key(record.id), RETENTION_MS)
        for index in (mo_index_key(owner), mo_index_key(owner, record.recipient)):
            pipe.zadd(index, {record.id: 0})
            pipe.zremrangebylex(index, "-", f"({floor}")  # older than the retention
            pipe.pexpire(index, RETENTION_MS)
        if watch_at is not None:
            pipe.zadd(MO_WATCH_KEY, {record.id: watch_at})
        pipe.hincrby(COUNTERS_KEY, counter, 1)
        if parts_key:
            pipe.delete(parts_key)
        if also is not None:
            also(pipe)
        pipe.execute()

    # -- reading ----------------------------------------------------------------------------
    def load(self, mo_id: str) -> MoRecord | None:
        data = cast(dict[str, str], self.redis.hgetall(mo_key(mo_id)))
        return MoRecord.from_hash(data) if data.get("id") else None

    def page(
        self, owner: str, *, to: str = "", since: int | None = None, cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[MoRecord], str | None]:  # fmt: skip
        """The owner's MOs (`NO_OWNER`: those nobody owns), newest first, from after `cursor`
        (the last id of the page before); the page and the next cursor (None at the end)."""
        limit = max(1, min(limit, MAX_PAGE))
        upper = f"({cursor}" if cursor else "+"
        lower = f"[{id_floor(since)}" if since is not None else "-"
        ids = cast(
            list[str],
            self.redis.zrevrangebylex(mo_index_key(owner, to), upper, lower, 0, limit + 1),
        )
        more = len(ids) > limit
        ids = ids[:limit]
        pipe = self.redis.pipeline(transaction=False)
        for mo_id in ids:
            pipe.hgetall(mo_key(mo_id))
        records = [MoRecord.from_hash(d) for d in pipe.execute() if d.get("id")] if ids else []
        return records, (ids[-1] if more and ids else None)

    # -- webhook delivery (the receipt engine) ----------------------------------------------
    def claim(self, mo_ids: Sequence[str], now: int, lease_ms: int) -> list[MoClaim | None]:
        """Claim each MO's webhook for an attempt (None: nothing to deliver now), in one
        round trip."""
        replies = self._each(
            lambda client, mo_id: self._claim(
                keys=[mo_key(mo_id), MO_WATCH_KEY], args=[now, lease_ms], client=client
            ),
            [(mo_id,) for mo_id in mo_ids],
        )
        return [_claim(mo_id, reply) for mo_id, reply in zip(mo_ids, replies, strict=True)]

    def settle(self, settlements: Sequence[MoSettlement], now: int) -> list[int]:
        """Record each attempt's outcome (1), or 0 where it had lost its claim."""
        replies = self._each(self._settle_one, [(s, now) for s in settlements])
        return [int(reply) for reply in replies]

    def _settle_one(self, client: Client, s: MoSettlement, now: int) -> Any:
        status = "" if s.status_code is None else s.status_code
        return self._settle(
            keys=[mo_key(s.mo_id), MO_WATCH_KEY, MO_DEAD_KEY],
            args=[s.outcome, now, s.due, s.why, status],
            client=client,
        )

    def replay(self, mo_id: str, now: int) -> bool:
        """Make a delivered or dead-lettered MO webhook due again (`lua/mo_replay.lua`)."""
        return bool(self._replay(keys=[mo_key(mo_id), MO_WATCH_KEY, MO_DEAD_KEY], args=[now]))

    def dead(self, since_ms: int = 0, until_ms: int | None = None) -> list[str]:
        """MO ids whose webhook was dead-lettered in the time range."""
        upper: int | str = "+inf" if until_ms is None else until_ms
        return [str(m) for m in self.redis.zrangebyscore(MO_DEAD_KEY, since_ms, upper)]

    def watched(self, before: int, limit: int) -> list[str]:
        """MO ids whose webhook should have moved before `before` (ms): the reconciler's."""
        found = self.redis.zrangebyscore(MO_WATCH_KEY, "-inf", before, start=0, num=limit)
        return [str(m) for m in found]

    def watch(self, mo_id: str, at: int) -> None:
        self.redis.zadd(MO_WATCH_KEY, {mo_id: at})

    def unwatch(self, mo_id: str) -> None:
        self.redis.zrem(MO_WATCH_KEY, mo_id)

    def _each(self, call: Callable[..., Any], items: Sequence[Sequence[Any]]) -> list[Any]:
        return lua_scripts.each(self.redis, call, items)


def _claim(mo_id: str, reply: Any) -> MoClaim | None:
    if not isinstance(reply, list):
        return None
    attempt, sender, to, text, carrier, received_at, key_id, mo_url, first, base = reply[:10]
    keyword, parts, missing = reply[10:13]
    record = MoRecord(
        id=mo_id, sender=str(sender), recipient=str(to), text=str(text), carrier=str(carrier),
        received_at=int(received_at or 0), key_id=str(key_id), mo_url=str(mo_url),
        keyword=str(keyword), parts=int(parts or 1), missing=str(missing), state="sending",
        attempts=int(attempt),
    )  # fmt: skip
    return MoClaim(record, int(attempt), int(first) if first else None, int(base or 0))
