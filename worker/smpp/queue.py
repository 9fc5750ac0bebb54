"""The hand-over between workers and the SMPP connector: Redis Streams, one per carrier and lane.

Keys (this module owns them):
  smpp:{carrier}:out:{lane}       stream per lane (otp, normal, bulk): one entry per segment to
                                  submit, fields `ref` (`{message id}:{seq}`) and `pdu` (the
                                  submit_sm body)
  smpp:{carrier}:written          hash: `{lane}:{entry id}` -> consumer, for entries whose
                                  submit_sm was (about to be) written to a bind
  smpp:{carrier}:alive:{consumer} string with a short TTL: that connector is running
  smpp:{stream key}:ref:{ref}     string with a day's TTL: the id of the entry queued for that
                                  segment; the stream's key in braces (a hash tag) keeps both
                                  keys in one slot of a Redis Cluster

A worker adds an entry to its lane's stream (`enqueue`), at most once per segment: queueing the
same ref again (a run that lost Redis's reply, or died before storing the outcome) returns the
first entry (`worker/store/lua/smpp_enqueue.lua`), so a segment may safely be queued again.
Connectors read them as the consumer group `connector`, each under its own consumer name, the
OTP lane first, then normal, then bulk, so an OTP never waits behind a campaign's backlog. An
entry stays pending (Redis's pending entries list) until its outcome is stored, then it is
acknowledged and deleted (`done`). Just before a submit_sm is written, its entry is marked
`written`; an SMSC's answer that sends nothing out (a throttle, a transient error) unmarks it.
So when a connector dies, its pending entries (`orphans`, taken over by a live connector once
the dead one's `alive` key expired) are either unmarked — never sent: submitted again — or
marked — sent, no answer seen: the outcome is unknown, and the segment is not sent twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import redis

from worker.contract import Priority
from worker.store import lua_scripts
from worker.store.keys import smpp_alive_key, smpp_ref_key, smpp_stream_key, smpp_written_key

GROUP = "connector"
ALIVE_SECONDS = 6.0  # a connector refreshes its key every third of this
LANES = tuple(p.value for p in (Priority.OTP, Priority.NORMAL, Priority.BULK))  # read order
# A segment queued again within this long gets its first entry back: far longer than any
# retry of a send (backoff capped at minutes, claims leased for minutes).
REF_TTL_MS = 24 * 3600 * 1000


def enqueue(client: redis.Redis, carrier: str, ref: str, pdu: bytes, lane: str) -> str:
    """Queue one segment's submit_sm body for the carrier's connector, on its message's lane
    (`normal` for one we do not know); the entry id. Idempotent: the same `ref` queued again
    returns its first entry and adds nothing."""
    stream = smpp_stream_key(carrier, lane if lane in LANES else Priority.NORMAL.value)
    script = lua_scripts.register(client, "smpp_enqueue")
    return _text(script(keys=[stream, smpp_ref_key(stream, ref)], args=[ref, pdu, REF_TTL_MS]))


@dataclass(frozen=True, slots=True)
class Entry:
    """One segment waiting for (or in) a bind."""

    id: str
    ref: str  # `{message id}:{seq}`
    pdu: bytes  # the submit_sm body
    lane: str = Priority.NORMAL.value
    written: bool = False  # a dead connector may have sent it

    @property
    def queued_at(self) -> int:
        """When the worker queued it (Unix ms: the first half of a stream entry id)."""
        return int(self.id.partition("-")[0])

    @property
    def segment(self) -> tuple[str, int]:
        message_id, _, seq = self.ref.rpartition(":")
        return message_id, int(seq)

    @property
    def mark(self) -> str:
        """Its field in the `written` hash (ids are unique per stream only)."""
        return f"{self.lane}:{self.id}"


class SegmentQueue:
    """One carrier's streams, as one connector (`consumer`) sees them. Blocking calls: the
    connector runs them in threads. `client` must not decode responses (the PDUs are bytes)."""

    def __init__(self, client: redis.Redis, carrier: str, consumer: str) -> None:
        self.client = client
        self.carrier = carrier
        self.consumer = consumer
        self.streams = {lane: smpp_stream_key(carrier, lane) for lane in LANES}
        self.written_key = smpp_written_key(carrier)

    def create_group(self) -> None:
        """The consumer group on every lane, reading from the start (entries queued before
        any connector ran)."""
        for stream in self.streams.values():
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` new entries for this consumer, the OTP lane's first; when every lane
        is empty, wait up to `block_ms` for one on any."""
        entries: list[Entry] = []
        for lane in LANES:
            if len(entries) < count:
                entries += self._read({self.streams[lane]: ">"}, count - len(entries), None)
        if entries or not block_ms:
            return entries
        return self._read({stream: ">" for stream in self.streams.values()}, count, block_ms)

    def _read(self, streams: dict[str, str], count: int, block_ms: int | None) -> list[Entry]:
        found = self.client.xreadgroup(GROUP, self.consumer, streams, count=count, block=block_ms)  # type: ignore[arg-type]
        entries = []
        for stream, items in cast(
            list[tuple[Any, list[tuple[Any, dict[bytes, bytes]]]]], found or []
        ):
            lane = _text(stream).rpartition(":")[2]
            entries += [_entry(entry_id, fields, lane) for entry_id, fields in items if fields]
        return sorted(entries, key=lambda e: LANES.index(e.lane))

    def mark_written(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.client.hset(self.written_key, mapping={e.mark: self.consumer for e in entries})

    def unmark_written(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.client.hdel(self.written_key, *[e.mark for e in entries])

    def done(self, entries: Sequence[Entry]) -> None:
        """The entries' outcomes are stored: acknowledge and delete them."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for lane, stream in self.streams.items():
            ids = [e.id for e in entries if e.lane == lane]
            if ids:
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
        pipe.hdel(self.written_key, *[e.mark for e in entries])
        pipe.execute()

    def heartbeat(self) -> None:
        alive = smpp_alive_key(self.carrier, self.consumer)
        self.client.set(alive, b"1", px=int(ALIVE_SECONDS * 1000))

    def leave(self) -> None:
        """A clean stop: this consumer's entries may be taken over at once."""
        self.client.delete(smpp_alive_key(self.carrier, self.consumer))

    def orphans(self, limit: int = 1000) -> list[Entry]:
        """Take over the pending entries of connectors that are gone (their `alive` key
        expired), with whether each was written; forget those consumers once emptied."""
        taken: list[Entry] = []
        for lane, stream in self.streams.items():
            consumers = cast(list[dict[Any, Any]], self.client.xinfo_consumers(stream, GROUP))
            for consumer in consumers:
                name = _text(consumer["name"])
                if name == self.consumer or self.client.exists(smpp_alive_key(self.carrier, name)):
                    continue
                pending = cast(
                    list[dict[str, Any]],
                    self.client.xpending_range(stream, GROUP, "-", "+", limit, name),
                )
                ids = [p["message_id"] for p in pending]
                if ids:
                    taken += self._claim(lane, ids)
                if len(ids) < limit:
                    self.client.xgroup_delconsumer(stream, GROUP, name)
        return taken

    def _claim(self, lane: str, ids: list[Any]) -> list[Entry]:
        stream = self.streams[lane]
        claimed = cast(
            list[tuple[Any, dict[bytes, bytes] | None]],
            self.client.xclaim(stream, GROUP, self.consumer, 0, ids),
        )
        entries = [_entry(entry_id, fields, lane) for entry_id, fields in claimed if fields]
        gone = {_text(i) for i in ids} - {e.id for e in entries}
        if gone:  # deleted under us (acknowledged by a connector that was not dead after all)
            self.client.xack(stream, GROUP, *gone)
        if not entries:
            return []
        marks = cast(list[Any], self.client.hmget(self.written_key, [e.mark for e in entries]))
        return [
            replace(e, written=mark is not None) for e, mark in zip(entries, marks, strict=True)
        ]

    def depth(self) -> int:
        """Entries waiting or in flight, all lanes (for status and tests)."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams.values():
            pipe.xlen(stream)
        return sum(int(n) for n in pipe.execute())


def _entry(entry_id: Any, fields: dict[bytes, bytes], lane: str) -> Entry:
    return Entry(_text(entry_id), _text(fields[b"ref"]), bytes(fields[b"pdu"]), lane)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
