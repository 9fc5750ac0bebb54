"""The SMPP connector's throughput, next to a plain loop on the same codec:
`python -m bench smpp [--count 5000] [--binds 4] [--window 10]`.

The SMSC is our stand-in (`tests.smpp.smsc`) in a process of its own, answering every
submit_sm at once and sending a DELIVRD receipt for it. Measured, with 1 and `--binds`
transceiver binds, `--window` submit_sm outstanding per bind:

  ceiling  a plain asyncio loop on `worker.smpp.session` (our codec): N submit_sm, no Redis;
           segments/s until every submit_sm_resp came back;
  smsq     N single-segment messages stored as a worker leaves them (`sent`, their submit_sm
           queued on the carrier's stream in one pipeline), then the real `smsq smpp`
           process: segments/s until every answer is stored and its entry done (the stream
           empty), receipts applied as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis

from bench.harness import processes, wait_until
from worker.carriers.base import SegmentSubmission
from worker.contract import MessageStatus
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.smpp import queue
from worker.smpp.config import SmppConfig
from worker.smpp.pdu import Command, Pdu
from worker.smpp.queue import SegmentQueue
from worker.smpp.session import Endpoint, Session
from worker.smpp.submit import submit_body
from worker.store import Message, Store, carrier_index_key, segments_key
from worker.store.keys import smpp_alive_key

TEXT = "Your code is 123456"
CARRIER = "bench"


def body(n: int) -> bytes:
    segment = SegmentSubmission(
        message_id=f"b{n}", seq=1, total=1, to=f"+1415{5_000_000 + n:07d}", sender="smsq",
        udh=b"", payload=b"", data_coding=0, text=TEXT, full_text=TEXT, receipt_url="",
    )  # fmt: skip
    return submit_body(segment, SmppConfig(host="-", system_id="-"))


async def ceiling(port: int, n: int, binds: int, window: int) -> float:
    """N submit_sm over `binds` sessions, `window` each outstanding: segments/s."""

    def ack(session: Session, pdu: Pdu) -> None:
        session.respond(pdu, body=b"\0")

    endpoint = Endpoint("127.0.0.1", port, "bench", "")
    sessions = [Session(endpoint, "transceiver", ack) for _ in range(binds)]
    await asyncio.gather(*(s.open() for s in sessions))
    pdus = [body(i) for i in range(n)]

    async def run(session: Session, share: list[bytes]) -> None:
        slots = asyncio.Semaphore(window)

        async def one(pdu: bytes) -> None:
            async with slots:
                await session.request(Command.SUBMIT_SM, pdu)

        await asyncio.gather(*(one(pdu) for pdu in share))

    started = time.monotonic()
    await asyncio.gather(*(run(s, pdus[i::binds]) for i, s in enumerate(sessions)))
    elapsed = time.monotonic() - started
    await asyncio.gather(*(s.unbind() for s in sessions))
    return n / elapsed


def queue_segments(client: redis.Redis, raw: redis.Redis, n: int, offset: int) -> None:
    """N messages as a worker leaves them: one segment each, `sent`, its submit_sm queued."""
    store = Store(client)
    for start in range(0, n, 500):
        ids = [f"b{offset + i}" for i in range(start, min(n, start + 500))]
        pipe = client.pipeline(transaction=False)
        for message_id in ids:
            message = Message(
                id=message_id, to="+14155550000", sender="smsq", content=TEXT, segments=1,
                status=MessageStatus.SUBMITTING,
            )  # fmt: skip
            store.add_create(pipe, message, "accepted")
            pipe.hset(segments_key(message_id), mapping={"1:status": "sent"})
            pipe.set(carrier_index_key(CARRIER, f"{message_id}.1"), f"{message_id}:1")
        pipe.execute()
    pipe = raw.pipeline(transaction=False)
    for i in range(n):
        queue.enqueue(pipe, CARRIER, f"b{offset + i}:1", body(i), "normal")
    pipe.execute()


def through_smsq(tmp: Path, redis_url: str, smsc_port: int, n: int, binds: int, window: int,
                 offset: int) -> float:  # fmt: skip
    """The real connector: segments/s from the queue filled to every answer stored."""
    carriers = tmp / f"carriers-{binds}.toml"
    carriers.write_text(
        f'[carriers.{CARRIER}]\ntype = "smpp"\nhost = "127.0.0.1"\nport = {smsc_port}\n'
        f'system_id = "bench"\npassword = ""\nbinds = {binds}\nwindow = {window}\n'
        f'[[routes]]\ncarriers = ["{CARRIER}"]\n'
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    raw = redis.Redis.from_url(redis_url)
    env = {"SMSQ_REDIS_URL": redis_url, "SMSQ_CARRIERS_FILE": str(carriers),
           "SMSQ_LOG_LEVEL": "ERROR"}  # fmt: skip
    with processes(env) as group:
        group.start("-m", "producer", "smpp")
        streams = SegmentQueue(raw, CARRIER, "bench")
        wait_until(lambda: bool(client.keys(smpp_alive_key(CARRIER, "*"))), 30)
        time.sleep(1.0)  # every bind up (the first heartbeat comes with the first bind)
        queue_segments(client, raw, n, offset)
        started = time.monotonic()
        ended = wait_until(lambda: streams.depth() == 0, 600, poll=0.02)
    client.close()
    raw.close()
    return n / (ended - started)


def run(n: int, binds: int, window: int) -> list[tuple[str, str]]:
    rows = [("segments per measurement", f"{n:,}"), ("window per bind", str(window))]
    smsc_port = free_port()
    with tempfile.TemporaryDirectory() as tmp, processes({}) as smsc:
        smsc.start("-m", "tests.smpp.smsc", str(smsc_port))
        time.sleep(1.0)
        for count in (1, binds):
            rate = asyncio.run(ceiling(smsc_port, n, count, window))
            rows.append(
                (f"ceiling (plain loop, codec), {count} bind(s): segments/s", f"{rate:,.0f}")
            )
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=True)
        redis_url = server.start()
        try:
            for i, count in enumerate((1, binds)):
                rate = through_smsq(Path(tmp), redis_url, smsc_port, n, count, window, i * n)
                rows.append((f"smsq smpp, {count} bind(s): segments/s (answers stored)",
                             f"{rate:,.0f}"))  # fmt: skip
        finally:
            server.stop()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench smpp", description=__doc__)
    parser.add_argument("--count", type=int, default=5000, help="segments per measurement")
    parser.add_argument("--binds", type=int, default=4, help="binds of the second measurement")
    parser.add_argument("--window", type=int, default=10, help="submit_sm outstanding per bind")
    args = parser.parse_args(argv)
    rows = run(args.count, args.binds, args.window)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
