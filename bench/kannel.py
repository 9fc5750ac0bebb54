"""smsq through a real Kannel, next to Kannel on its own: `python -m bench kannel [--count 5000]`.

Starts a Kannel 1.4 (bearerbox + smsbox, Debian's `kannel` + `kannel-extras`) whose SMSC is
Kannel's `fakesmsc` (or, `--smsc smpp`, our SMPP stand-in `tests.smpp.smsc`), then measures on
the same Kannel, with the same `dlr-mask` (`--dlr-mask`, smsq's default 27):

  kannel  N sendsms requests (`--concurrency` at a time, as smsq's send threads), each with a
          `dlr-url` to a counting receiver: messages/s until the SMSC has all N and every DLR
          Kannel reports (the SMSC's ack, 8, and the delivery, 1) came back;
  smsq    one POST /sms/batch of N level-3 messages through smsq (its Kannel adapter, one
          worker process per lane, 2 × 32 send threads): messages/s until every level-1 and
          level-2 receipt reached the client's `dlr-url`;

and prints both and their ratio (the target: smsq ≥ 0.5 × Kannel). Skips, saying why,
when Kannel is not installed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis

from bench.harness import Processes, processes, wait_http, wait_until
from tests.integration.kannel import KANNEL_MISSING, PASSWORD, USERNAME, Kannel, running_kannel
from tests.smpp.smsc import RunningSmsc, running_smsc
from worker.carriers.kannel import DEFAULT_DLR_MASK, SMSC_ACK
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.keys import KeyStore

TEXT = "Your code is 123456"
ESCAPES = "type=%d&ts=%T&smsc=%i&fid=%F&answer=%A"  # what smsq asks Kannel to fill in


class Smsc:
    """How many messages the SMSC behind Kannel has received."""

    def __init__(self, kannel: Kannel, smpp: RunningSmsc | None) -> None:
        self.kannel, self.smpp = kannel, smpp

    def received(self) -> int:
        if self.smpp is not None:
            return self.smpp.counters.submits
        return self.kannel.output.read_bytes().count(b"Got message")


def numbers(count: int, offset: int) -> list[str]:
    """Valid, distinct US numbers (as bench e2e's)."""
    return [f"+1415{n:07d}" for n in range(5_000_000 + offset, 5_000_000 + offset + count)]


def count(receiver_url: str, name: str) -> int:
    counts: dict[str, int] = httpx.get(f"{receiver_url}/count", timeout=10).json()
    return int(counts.get(name, 0))


def dlrs_per_message(mask: int) -> int:
    """The DLRs Kannel sends for a delivered message: the SMSC's ack, and the delivery."""
    return (1 if mask & SMSC_ACK else 0) + (1 if mask & 1 else 0)


def kannel_alone(
    kannel: Kannel, smsc: Smsc, receiver_url: str, n: int, mask: int, concurrency: int
) -> float:
    """N sendsms requests; messages/s until the SMSC has them and every DLR came back."""
    before_smsc, before_dlrs = smsc.received(), count(receiver_url, "requests")
    params = {"username": USERNAME, "password": PASSWORD, "from": "smsq", "text": TEXT,
              "charset": "UTF-8", "coding": "0", "dlr-mask": str(mask)}  # fmt: skip

    def send(client: httpx.Client, i: int, to: str) -> None:
        dlr_url = f"{receiver_url}/r?id=k{i}.1&{ESCAPES}"
        wanted = {**params, "to": to, "dlr-url": dlr_url}
        client.get(f"{kannel.url}/cgi-bin/sendsms", params=wanted).raise_for_status()

    recipients = numbers(n, 0)
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=30, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: send(client, i, recipients[i]), range(n)))
    wanted = n * dlrs_per_message(mask)
    ended = wait_until(
        lambda: (
            smsc.received() - before_smsc >= n
            and count(receiver_url, "requests") - before_dlrs >= wanted
        ),
        600,
        poll=0.1,
    )
    return n / (ended - started)


def start_smsq(group: Processes, redis_url: str, kannel: Kannel, mask: int) -> tuple[str, str]:
    """API, workers (the e2e layout) and scheduler with Kannel as the carrier; a receiver for
    the client's receipts. Returns (API URL, receiver URL)."""
    api_port, receiver_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    group.env.update(
        {
            "SMSQ_REDIS_URL": redis_url,
            "SMSQ_CARRIER": "kannel",
            "SMSQ_CARRIER_URL": kannel.url,
            "SMSQ_CARRIER_USERNAME": USERNAME,
            "SMSQ_CARRIER_PASSWORD": PASSWORD,
            "SMSQ_CARRIER_DLR_MASK": str(mask),
            "SMSQ_PUBLIC_URL": api_url,
            "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_WORKER_CONCURRENCY": "64",
        }
    )
    group.start("-m", "bench.receiver", str(receiver_port))
    group.start("-m", "uvicorn", "producer.api:create_app", "--factory", "--port", str(api_port),
                "--log-level", "warning", "--no-access-log")  # fmt: skip
    group.worker("otp", 16, "otp")
    for n in range(2):
        group.worker("normal", 32, f"normal{n + 1}")
    group.worker("bulk", 64, "bulk")
    group.worker("dlr", 8, "dlr")  # the receipt engine: its loop, not threads, does the work
    group.worker("carrier-dlr", 8, "carrier-dlr")
    group.start("-m", "producer", "scheduler")
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    for url in (f"{api_url}/healthz", f"{receiver_url}/count"):
        wait_http(url)
    time.sleep(2)  # the workers connect
    return api_url, receiver_url


def smsq_through_kannel(
    client: redis.Redis, api_url: str, receiver_url: str, smsc: Smsc, n: int
) -> tuple[float, float]:
    """One batch of N level-3 messages: (messages/s until every receipt of both levels
    arrived, seconds until the SMSC had them all)."""
    key = KeyStore(client).create("bench-kannel").api_key
    before = smsc.received()
    body = {
        "content": TEXT,
        "recipients": numbers(n, 100_000),
        "priority": "normal",
        "dlr": True,
        "dlr-level": 3,
        "dlr-url": f"{receiver_url}/r",
    }
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=600) as api:
        started = time.monotonic()
        reply = api.post(f"{api_url}/sms/batch", json=body)
        reply.raise_for_status()
        if reply.json()["accepted"] != n:
            raise RuntimeError(f"the batch was not accepted whole: {reply.text[:300]}")
        handed = wait_until(lambda: smsc.received() - before >= n, 900, poll=0.1)
        ended = wait_until(
            lambda: count(receiver_url, "1") >= n and count(receiver_url, "2") >= n, 900, poll=0.2
        )
    return n / (ended - started), handed - started


@contextmanager
def kannel_with_smsc(directory: Path, smsc: str) -> Iterator[tuple[Kannel, Smsc]]:
    with ExitStack() as stack:
        smpp = stack.enter_context(running_smsc()) if smsc == "smpp" else None
        port = smpp.port if smpp else None
        (directory / "kannel").mkdir()
        kannel = stack.enter_context(running_kannel(directory / "kannel", smpp_port=port))
        yield kannel, Smsc(kannel, smpp)


def run(
    n: int, *, smsc: str = "fake", mask: int = DEFAULT_DLR_MASK, concurrency: int = 64
) -> list[tuple[str, str]]:
    """Both measurements on one Kannel; the rows to print (empty without Kannel)."""
    if KANNEL_MISSING is not None:
        return []
    rows = [("messages", f"{n:,}"), ("SMSC behind Kannel", smsc), ("dlr-mask", str(mask))]
    with tempfile.TemporaryDirectory() as tmp, kannel_with_smsc(Path(tmp), smsc) as (k, counter):
        dlr_port = free_port()
        with processes({}) as receivers:
            receivers.start("-m", "bench.receiver", str(dlr_port))
            receiver_url = f"http://127.0.0.1:{dlr_port}"
            wait_http(f"{receiver_url}/count")
            alone = kannel_alone(k, counter, receiver_url, n, mask, concurrency)
        rows.append(("kannel alone: messages/s (SMSC has all, every DLR back)", f"{alone:,.0f}"))
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=True)
        redis_url = server.start()
        try:
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            with processes({}) as group:
                api_url, receipts_url = start_smsq(group, redis_url, k, mask)
                rate, handed = smsq_through_kannel(client, api_url, receipts_url, counter, n)
            client.close()
        finally:
            server.stop()
    rows.append(("smsq via kannel: messages/s (every level-1 + level-2 receipt)", f"{rate:,.0f}"))
    rows.append(("smsq via kannel: SMSC had all after (s)", f"{handed:.1f}"))
    rows.append(("ratio smsq / kannel alone (target ≥ 0.5)", f"{rate / alone:.3f}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench kannel", description=__doc__)
    parser.add_argument("--count", type=int, default=5000, help="messages per measurement")
    parser.add_argument("--smsc", choices=("fake", "smpp"), default="fake")
    parser.add_argument("--dlr-mask", type=int, default=DEFAULT_DLR_MASK)
    parser.add_argument("--concurrency", type=int, default=64, help="sendsms requests at once")
    args = parser.parse_args(argv)
    rows = run(args.count, smsc=args.smsc, mask=args.dlr_mask, concurrency=args.concurrency)
    if not rows:
        print(f"skipped: {KANNEL_MISSING}")
        return
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
