"""The end-to-end benchmark (docs/performance.md): fixed scenarios against a real smsq on loopback.

`python -m bench e2e [--scale 1.0] [--only a,b,c,d,e,i]`

Starts its own Redis (AOF on), carrier simulator (20 ms latency), receipt counter, API and one
worker process per lane, then runs each scenario and prints one table, next to the engine
ceiling measured in the same run (no-op Celery tasks drained by one worker on the same Redis):

  a  20,000 single-segment messages via POST /sms/batch, level-1 receipts
  b  the same with levels 1 + 2
  c  5,000 three-segment messages, level-1 receipts
  d  OTP accept→submit p50 / p99 while a bulk backlog drains
  e  1,000,000 scheduled messages: Redis bytes per item, worker RSS before/after, firing delay
  (a–c are preceded by an uncounted warm-up batch: the first messages pay for imports and pools;
   each prints its messages/s as a fraction of the engine ceiling)
  i  isolation: 40 messages to a dlr-url that dribbles (a byte every 2 s), 40 to one that never
     answers, 2,000 to a healthy one (level 1): every healthy receipt arrives, and how late
     after its event (p50 / p99), while the hostile ones wait; the inbox never backs up

`--scale` multiplies every count (the test suite runs 0.005 to prove the harness works).
`--dlr-batch` sends the messages of a–c with `dlr-batch: true` (receipts to one `dlr-url` in
batched POSTs); `--carrier-receipt-batch N` makes the simulator report up to N receipts per
callback (default 1: one callback per receipt, as Kannel and Twilio do). The normal lane runs
`--send-processes` worker processes of `--send-threads` threads (default 2 × 32: on this
2-core machine two processes of 32 threads beat one of 64 — the GIL — by about 1.5×).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
import psutil
import redis

from bench.harness import (
    Processes,
    engine_ceiling,
    processes,
    redis_commands,
    redis_cpu,
    wait_http,
    wait_until,
)
from bench.hostile import dribble, hostile_server, silent
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.keys import KeyStore
from worker.store.keys import INBOX_KEY, batch_ids_key, message_key, segments_key

# Disjoint number ranges per scenario (5,000,000 + offset stays a valid 7-digit US number).
OFFSETS = {
    "a": 0, "b": 100_000, "c": 200_000, "d": 300_000, "e": 1_000_000, "on-time": 3_000_000,
    "i": 3_100_000, "warm-up": 3_200_000,
}  # fmt: skip
OTP_BODY = {"to": "+447911123456", "content": "Your code is 123456", "priority": "otp"}
THREE_SEGMENTS = "x" * 400  # 400 GSM-7 septets: three concatenated segments


@dataclass(frozen=True)
class Cost:
    """What one message cost in a throughput scenario (a–c): CPU ms by process role (`role` in
    `bench/harness.py`, plus `redis`), Redis commands, and the rate it went at."""

    cpu_ms: dict[str, float]
    redis_commands: float
    messages_per_second: float


@dataclass
class System:
    """A running smsq for the benchmark."""

    redis_url: str
    client: redis.Redis
    group: Processes
    api: httpx.Client
    receiver_url: str
    sim_url: str
    dlr_batch: bool = False
    ceiling: float = 1.0  # no-op Celery tasks/s in the same run
    results: list[tuple[str, str]] = field(default_factory=list)
    costs: dict[str, Cost] = field(default_factory=dict)  # by scenario (a–c)

    def receipts(self) -> dict[str, int]:
        counts: dict[str, int] = httpx.get(f"{self.receiver_url}/count", timeout=10).json()
        return {k: int(v) for k, v in counts.items()}

    def add(self, name: str, value: str) -> None:
        self.results.append((name, value))


def start(
    redis_url: str,
    client: redis.Redis,
    group: Processes,
    *,
    dlr_batch: bool = False,
    carrier_receipt_batch: int = 1,
    send_processes: int = 2,
    send_threads: int = 32,
) -> System:
    api_port, sim_port, receiver_port = free_port(), free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    group.env.update(
        {
            "SMSQ_CARRIER_URL": f"http://127.0.0.1:{sim_port}",
            "SMSQ_PUBLIC_URL": api_url,
            "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_WORKER_CONCURRENCY": "64",
        }
    )
    sim = ["--port", str(sim_port), "--latency-ms", "20", "--receipt-delay", "0.2"]
    if carrier_receipt_batch > 1:
        sim += ["--receipt-batch", str(carrier_receipt_batch)]
    group.start("-m", "producer", "carrier-sim", *sim)
    group.start("-m", "bench.receiver", str(receiver_port))
    group.start("-m", "uvicorn", "producer.api:create_app", "--factory", "--port", str(api_port),
                "--log-level", "warning", "--no-access-log")  # fmt: skip
    group.worker("otp", 16, "otp")
    for n in range(send_processes):
        group.worker("normal", send_threads, f"normal{n + 1}")
    group.worker("bulk", 64, "bulk")
    group.worker("dlr", 8, "dlr")  # the receipt engine: its loop, not threads, does the work
    group.worker("carrier-dlr", 8, "carrier-dlr")
    group.start("-m", "producer", "scheduler")
    for url in (f"{api_url}/healthz", f"http://127.0.0.1:{sim_port}/stats",
                f"http://127.0.0.1:{receiver_port}/count"):  # fmt: skip
        wait_http(url)
    time.sleep(2)
    key = KeyStore(client).create("bench").api_key
    api = httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {key}"}, timeout=600)
    return System(redis_url, client, group, api, f"http://127.0.0.1:{receiver_port}",
                  f"http://127.0.0.1:{sim_port}", dlr_batch=dlr_batch)  # fmt: skip


def numbers(count: int, offset: int) -> list[str]:
    return [f"+1415{n:07d}" for n in range(5_000_000 + offset, 5_000_000 + offset + count)]


def throughput(system: System, label: str, count: int, content: str, level: int) -> None:
    """Scenarios a–c: one batch, timed from the request to the last wanted receipt."""
    before = system.receipts()
    wanted = {"1": count} if level == 1 else {"1": count, "2": count}
    commands, cpu = redis_commands(system.client), system.group.cpu_seconds()
    cpu += redis_cpu(system.client)
    by_role = system.group.cpu_by_process()
    by_role["redis"] = redis_cpu(system.client)
    started = time.monotonic()
    body = {
        "content": content,
        "recipients": numbers(count, OFFSETS[label]),
        "priority": "normal",
        "dlr": True,
        "dlr-level": 1 if level == 1 else 3,
        "dlr-url": f"{system.receiver_url}/r",
    }
    if system.dlr_batch:
        body["dlr-batch"] = True
    reply = system.api.post("/sms/batch", json=body)
    reply.raise_for_status()
    accepted = time.monotonic() - started

    def done() -> bool:
        now = system.receipts()
        return all(now.get(k, 0) - before.get(k, 0) >= n for k, n in wanted.items())

    elapsed = wait_until(done, 900, poll=0.2) - started
    if label == "warm-up":
        return
    used = system.group.cpu_seconds() + redis_cpu(system.client) - cpu
    after = system.group.cpu_by_process()
    after["redis"] = redis_cpu(system.client)
    per_role = {k: (after[k] - by_role.get(k, 0.0)) / count * 1000 for k in after}
    shares = sorted((ms, k) for k, ms in per_role.items())
    breakdown = ", ".join(f"{name} {ms:.2f}" for ms, name in reversed(shares) if ms >= 0.05)
    segments = count * (3 if content is THREE_SEGMENTS else 1)
    system.add(f"{label}: messages/s end to end", f"{count / elapsed:,.0f}")
    system.add(f"{label}: × engine ceiling", f"{count / elapsed / system.ceiling:.2f}")
    system.add(f"{label}: segments/s", f"{segments / elapsed:,.0f}")
    system.add(f"{label}: receipts/s", f"{sum(wanted.values()) / elapsed:,.0f}")
    posts = system.receipts().get("requests", 0) - before.get("requests", 0)
    system.add(f"{label}: receipt POSTs to the dlr-url", f"{posts:,}")
    system.add(f"{label}: batch accepted in (s)", f"{accepted:.2f}")
    system.add(f"{label}: CPU ms per message", f"{1000 * used / count:.2f}")
    system.add(f"{label}: of which, by process", breakdown)
    per_message = (redis_commands(system.client) - commands) / count
    system.add(f"{label}: Redis commands per message", f"{per_message:.1f}")
    system.costs[label] = Cost(per_role, per_message, count / elapsed)


def otp_under_backlog(system: System, bulk: int, seconds: float) -> None:
    """Scenario d: OTPs every 100 ms while a bulk campaign drains."""
    system.api.post(
        "/sms/batch", json={"content": "promo", "recipients": numbers(bulk, OFFSETS["d"])}
    )
    ids = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reply = system.api.post("/sms/send", json=OTP_BODY)
        ids.append(reply.json()["id"])
        time.sleep(0.1)
    time.sleep(2)
    latencies = []
    for message_id in ids:
        created = system.client.hget(message_key(message_id), "created_at")
        claimed = system.client.hget(segments_key(message_id), "1:submitted_at")
        if created and claimed:
            latencies.append(float(int(claimed) - int(created)))
    latencies.sort()
    system.add("d: OTPs sent under the bulk backlog", f"{len(ids)} ({len(latencies)} submitted)")
    system.add("d: bulk still queued at the end", f"{int(system.client.llen('bulk')):,}")
    if latencies:
        system.add("d: OTP accept→submit p50 (ms)", f"{statistics.median(latencies):.0f}")
        for share in (0.95, 0.99):
            value = latencies[min(len(latencies) - 1, int(share * len(latencies)))]
            system.add(f"d: OTP accept→submit p{share * 100:.0f} (ms)", f"{value:.0f}")
        system.add("d: OTP accept→submit, the 3 slowest (ms)",
                   ", ".join(f"{v:.0f}" for v in latencies[-3:]))  # fmt: skip


def worker_rss(group: Processes) -> float:
    total = 0
    for child in group.children:
        try:
            process = psutil.Process(child.pid)
            if "celery" in " ".join(process.cmdline()):
                total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1e6


def scheduled(system: System, count: int) -> None:
    """Scenario e: scheduled messages cost Redis bytes, not worker memory, and fire on time."""
    rss_before = worker_rss(system.group)
    memory_before = int(system.client.info("memory")["used_memory"])
    far = "2027-06-01T00:00:00Z"
    for start in range(0, count, 20_000):
        size = min(20_000, count - start)
        system.api.post("/sms/batch", json={
            "content": "later", "recipients": numbers(size, OFFSETS["e"] + start), "send_at": far,
        }).raise_for_status()  # fmt: skip
    memory_after = int(system.client.info("memory")["used_memory"])
    time.sleep(3)
    system.add("e: scheduled messages", f"{count:,}")
    system.add("e: Redis bytes per scheduled message (hash + events + schedule)",
               f"{(memory_after - memory_before) / count:,.0f}")  # fmt: skip
    system.add("e: worker RSS before / after (MB)",
               f"{rss_before:,.0f} / {worker_rss(system.group):,.0f}")  # fmt: skip
    due = time.time() + 3
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due)) + f".{int(due % 1 * 1000):03d}Z"
    on_time = {"content": "on time", "recipients": numbers(20, OFFSETS["on-time"]), "send_at": iso}
    reply = system.api.post("/sms/batch", json=on_time)
    batch = reply.json()["id"]
    ids = cast(list[str], system.client.lrange(batch_ids_key(batch), 0, -1))
    wait_until(lambda: all(system.client.hget(segments_key(i), "1:submitted_at") for i in ids),
               60)  # fmt: skip
    delays = [int(system.client.hget(segments_key(i), "1:submitted_at") or 0) - int(due * 1000)
              for i in ids]  # fmt: skip
    system.add("e: firing delay after due time, median / max (ms)",
               f"{statistics.median(delays):.0f} / {max(delays):.0f}")  # fmt: skip


def isolation(system: System, healthy: int, hostile: int) -> None:
    """Scenario i: hostile endpoints beside a healthy one (`bench.hostile`)."""
    before = system.receipts().get("1", 0)
    with hostile_server(dribble) as dribbler, hostile_server(silent) as mute:
        for port, offset in ((dribbler, 0), (mute, hostile)):
            system.api.post("/sms/batch", json={
                "content": "hostile", "recipients": numbers(hostile, OFFSETS["i"] + offset),
                "dlr": True, "dlr-level": 1, "dlr-url": f"http://127.0.0.1:{port}/dlr",
            }).raise_for_status()  # fmt: skip
        started = time.monotonic()
        system.api.post("/sms/batch", json={
            "content": "healthy", "recipients": numbers(healthy, OFFSETS["i"] + 2 * hostile),
            "dlr": True, "dlr-level": 1, "dlr-url": f"{system.receiver_url}/r?timed=1",
        }).raise_for_status()  # fmt: skip
        inbox = 0

        def arrived() -> bool:
            nonlocal inbox
            inbox = max(inbox, int(system.client.hlen(INBOX_KEY)))
            return system.receipts().get("1", 0) - before >= healthy

        elapsed = wait_until(arrived, 600, poll=0.2) - started
        late = httpx.get(f"{system.receiver_url}/latency", timeout=10).json()
    system.add("i: healthy receipts (arrived / sent)", f"{healthy:,} / {healthy:,}")
    system.add("i: healthy receipts/s beside hostile endpoints", f"{healthy / elapsed:,.0f}")
    system.add("i: healthy receipt after its event, p50 / p99 / max (ms)",
               f"{late['p50']:.0f} / {late['p99']:.0f} / {late['max']:.0f}")  # fmt: skip
    system.add("i: carrier receipt requests waiting in the inbox, most", f"{inbox:,}")


def run(
    scale: float,
    only: set[str],
    *,
    dlr_batch: bool = False,
    carrier_receipt_batch: int = 1,
    send_processes: int = 2,
    send_threads: int = 32,
    costs: dict[str, Cost] | None = None,
) -> list[tuple[str, str]]:
    """The scenarios in `only`, as table rows; `costs`, if given, gets each of a–c's `Cost`."""

    def n(full: int) -> int:
        return max(10, int(full * scale))

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=True)
        redis_url = server.start()
        try:
            ceiling = engine_ceiling(redis_url, max(n(20_000), 2000))
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            client.flushdb()
            with processes({"SMSQ_REDIS_URL": redis_url}) as group:
                system = start(
                    redis_url,
                    client,
                    group,
                    dlr_batch=dlr_batch,
                    carrier_receipt_batch=carrier_receipt_batch,
                    send_processes=send_processes,
                    send_threads=send_threads,
                )
                system.add(
                    "layout: normal-lane worker processes × threads",
                    f"{send_processes} × {send_threads}",
                )
                system.add("engine ceiling: no-op Celery tasks/s, 1 worker", f"{ceiling:,.0f}")
                system.ceiling = ceiling
                if only & {"a", "b", "c"}:
                    # Steady state: the first messages pay for imports, phone-number metadata
                    # loaded per country, connection pools; they are not counted.
                    throughput(system, "warm-up", min(n(2_000), 500), "Warm-up", 1)
                if "a" in only:
                    throughput(system, "a", n(20_000), "Your order has shipped", 1)
                if "b" in only:
                    throughput(system, "b", n(20_000), "Your order has shipped", 2)
                if "c" in only:
                    throughput(system, "c", n(5_000), THREE_SEGMENTS, 1)
                if "d" in only:
                    otp_under_backlog(system, n(100_000), max(2.0, 20 * min(scale, 1.0)))
                if "e" in only:
                    scheduled(system, n(1_000_000))
                if "i" in only:
                    isolation(system, n(2_000), 40)
                system.api.close()
                if costs is not None:
                    costs.update(system.costs)
                return system.results
        finally:
            server.stop()


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>14}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench e2e", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default="a,b,c,d,e,i")
    parser.add_argument("--dlr-batch", action="store_true", help="a–c ask for dlr-batch")
    parser.add_argument("--carrier-receipt-batch", type=int, default=1, metavar="N")
    parser.add_argument("--send-processes", type=int, default=2, help="normal-lane workers")
    parser.add_argument("--send-threads", type=int, default=32, help="threads of each")
    args = parser.parse_args(argv)
    rows = run(
        args.scale,
        set(args.only.split(",")),
        dlr_batch=args.dlr_batch,
        carrier_receipt_batch=args.carrier_receipt_batch,
        send_processes=args.send_processes,
        send_threads=args.send_threads,
    )
    print_table(rows)
