"""The hand-over between workers and the SMPP connector: one Redis Stream per carrier.

Keys (this module owns them):
  smpp:{carrier}:out              stream: one entry per segment to submit, fields `ref`
                                  (`{message id}:{seq}`) and `pdu` (the submit_sm body)
  smpp:{carrier}:written          hash: entry id -> consumer, for entries whose submit_sm
                                  was (about to be) written to a bind
  smpp:{carrier}:alive:{consumer} string with a short TTL: that connector is running

A worker adds an entry (`enqueue`); connectors read them as the consumer group `connector`,
each under its own consumer name. An entry stays pending (Redis's pending entries list) until
its outcome is stored, then it is acknowledged and deleted (`done`). Just before a submit_sm
is written, its entry is marked `written`; an SMSC's answer that sends nothing out (a
throttle, a transient error) unmarks it. So when a connector dies, its pending entries
(`orphans`, taken over by a live connector once the dead one's `alive` key expired) are
either unmarked — never sent: submitted again — or marked — sent, no answer seen: the outcome
is unknown, and the segment is not sent twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

GROUP = "connector"
PREFIX = "smsq:smpp:"
ALIVE_SECONDS = 6.0  # a connector refreshes its key every third of this


def stream_key(carrier: str) -> str:
    return f"{PREFIX}{carrier}:out"


def written_key(carrier: str) -> str:
    return f"{PREFIX}{carrier}:written"


def alive_key(carrier: str, consumer: str) -> str:
    return f"{PREFIX}{carrier}:alive:{consumer}"


def enqueue(client: redis.Redis, carrier: str, ref: str, pdu: bytes) -> str:
    """Queue one segment's submit_sm body for the carrier's connector; the entry id."""
    return _text(client.xadd(stream_key(carrier), {"ref": ref, "pdu": pdu}))


@dataclass(frozen=True, slots=True)
class Entry:
    """One segment waiting for (or in) a bind."""

    id: str
    ref: str  # `{message id}:{seq}`
    pdu: bytes  # the submit_sm body
    written: bool = False  # a dead connector may have sent it

    @property
    def queued_at(self) -> int:
        """When the worker queued it (Unix ms: the first half of a stream entry id)."""
        return int(self.id.partition("-")[0])

    @property
    def segment(self) -> tuple[str, int]:
        message_id, _, seq = self.ref.rpartition(":")
        return message_id, int(seq)


class SegmentQueue:
    """One carrier's stream, as one connector (`consumer`) sees it. Blocking calls: the
    connector runs them in threads. `client` must not decode responses (the PDUs are bytes)."""

    def __init__(self, client: redis.Redis, carrier: str, consumer: str) -> None:
        self.client = client
        self.carrier = carrier
        self.consumer = consumer
        self.stream = stream_key(carrier)
        self.written_key = written_key(carrier)

    def create_group(self) -> None:
        """The consumer group, reading from the start (entries queued before any connector)."""
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` new entries for this consumer, waiting up to `block_ms` for one."""
        found = self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        entries = []
        for _, items in cast(list[tuple[Any, list[tuple[Any, dict[bytes, bytes]]]]], found or []):
            entries += [_entry(entry_id, fields) for entry_id, fields in items if fields]
        return entries

    def mark_written(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.client.hset(self.written_key, mapping={e.id: self.consumer for e in entries})

    def unmark_written(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.client.hdel(self.written_key, *[e.id for e in entries])

    def done(self, entries: Sequence[Entry]) -> None:
        """The entries' outcomes are stored: acknowledge and delete them."""
        if not entries:
            return
        ids = [e.id for e in entries]
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.stream, GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.hdel(self.written_key, *ids)
        pipe.execute()

    def heartbeat(self) -> None:
        self.client.set(alive_key(self.carrier, self.consumer), b"1", px=int(ALIVE_SECONDS * 1000))

    def leave(self) -> None:
        """A clean stop: this consumer's entries may be taken over at once."""
        self.client.delete(alive_key(self.carrier, self.consumer))

    def orphans(self, limit: int = 1000) -> list[Entry]:
        """Take over the pending entries of connectors that are gone (their `alive` key
        expired), with whether each was written; forget those consumers once emptied."""
        consumers = cast(list[dict[Any, Any]], self.client.xinfo_consumers(self.stream, GROUP))
        taken: list[Entry] = []
        for consumer in consumers:
            name = _text(consumer["name"])
            if name == self.consumer or self.client.exists(alive_key(self.carrier, name)):
                continue
            pending = cast(
                list[dict[str, Any]],
                self.client.xpending_range(self.stream, GROUP, "-", "+", limit, name),
            )
            ids = [p["message_id"] for p in pending]
            if ids:
                taken += self._claim(ids)
            if len(ids) < limit:
                self.client.xgroup_delconsumer(self.stream, GROUP, name)
        return taken

    def _claim(self, ids: list[Any]) -> list[Entry]:
        claimed = cast(
            list[tuple[Any, dict[bytes, bytes] | None]],
            self.client.xclaim(self.stream, GROUP, self.consumer, 0, ids),
        )
        entries = [_entry(entry_id, fields) for entry_id, fields in claimed if fields]
        gone = {_text(i) for i in ids} - {e.id for e in entries}
        if gone:  # deleted under us (acknowledged by a connector that was not dead after all)
            self.client.xack(self.stream, GROUP, *gone)
        if not entries:
            return []
        marks = cast(list[Any], self.client.hmget(self.written_key, [e.id for e in entries]))
        return [
            Entry(e.id, e.ref, e.pdu, written=mark is not None)
            for e, mark in zip(entries, marks, strict=True)
        ]

    def depth(self) -> int:
        """Entries waiting or in flight (for status and tests)."""
        return int(self.client.xlen(self.stream))


def _entry(entry_id: Any, fields: dict[bytes, bytes]) -> Entry:
    return Entry(_text(entry_id), _text(fields[b"ref"]), bytes(fields[b"pdu"]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
