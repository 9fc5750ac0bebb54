"""End-to-end throughput of a real smsq on this machine, next to the engine ceiling of the same run.

`python -m bench.pipeline [--messages N] [--latency-ms MS]`: starts an embedded Redis (AOF on),
the carrier simulator (20 ms latency), a receipt counter, the API and the workers as `smsq up`
does, sends N single-segment messages through `POST /sms/send` with level-3 receipts (POST),
and waits for every level-2 receipt. The baseline is no-op Celery tasks drained by one worker
consumer on the same Redis.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

from bench.harness import (
    engine_ceiling,
    processes,
    redis_commands,
    redis_cpu,
    wait_http,
    wait_until,
)
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.keys import KeyStore


def send_all(api_url: str, api_key: str, receiver_url: str, count: int, threads: int) -> float:
    """Send `count` messages from `threads` keep-alive clients; returns seconds taken."""
    body = {
        "to": "+14155552671",
        "content": "Your code is 123456",
        "dlr": True,
        "dlr-level": 3,
        "dlr-url": f"{receiver_url}/r",
    }
    headers = {"authorization": f"Bearer {api_key}"}

    def worker(share: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            for _ in range(share):
                client.post(f"{api_url}/sms/send", json=body).raise_for_status()

    shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, shares))
    return time.monotonic() - started


def run(messages: int, latency_ms: float, concurrency: int, profile_commands: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=True)
        redis_url = server.start()
        try:
            ceiling = engine_ceiling(redis_url, max(messages, 5000))
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            client.flushdb()
            client.config_resetstat()
            api_port, sim_port, receiver_port = free_port(), free_port(), free_port()
            api_url = f"http://127.0.0.1:{api_port}"
            receiver_url = f"http://127.0.0.1:{receiver_port}"
            env = {
                "SMSQ_REDIS_URL": redis_url,
                "SMSQ_CARRIER_URL": f"http://127.0.0.1:{sim_port}",
                "SMSQ_PUBLIC_URL": api_url,
                "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
                "SMSQ_WORKER_CONCURRENCY": str(concurrency),
            }
            with processes(env) as group:
                group.start("-m", "producer", "carrier-sim", "--port", str(sim_port),
                            "--latency-ms", str(latency_ms), "--receipt-delay", "0.2")  # fmt: skip
                group.start("-m", "bench.receiver", str(receiver_port))
                group.start("-m", "uvicorn", "producer.api:create_app", "--factory",
                            "--port", str(api_port), "--log-level", "warning",
                            "--no-access-log")  # fmt: skip
                group.worker("normal", concurrency, "normal")
                group.worker("dlr", concurrency, "dlr")
                group.worker("carrier-dlr", concurrency, "carrier-dlr")
                for url in (f"{api_url}/healthz", f"http://127.0.0.1:{sim_port}/stats",
                            f"{receiver_url}/count"):  # fmt: skip
                    wait_http(url)
                time.sleep(2)  # let the workers connect
                api_key = KeyStore(client).create("bench").api_key
                commands, cpu, redis_cpu_before = (
                    redis_commands(client),
                    group.cpu_seconds(),
                    redis_cpu(client),
                )
                started = time.monotonic()
                ingest = send_all(api_url, api_key, receiver_url, messages, 16)

                def level2_done() -> bool:
                    counts = httpx.get(f"{receiver_url}/count").json()
                    return int(counts.get("2", 0)) >= messages

                finished = wait_until(level2_done, 600, poll=0.2)
                elapsed = finished - started
                cpu_used = group.cpu_seconds() - cpu + redis_cpu(client) - redis_cpu_before
                per_message_commands = (redis_commands(client) - commands) / messages
                counts = httpx.get(f"{receiver_url}/count").json()
                sim = httpx.get(f"http://127.0.0.1:{sim_port}/stats").json()
                if profile_commands:
                    for label, seconds in group.cpu_by_process().items():
                        print(f"cpu {seconds:7.2f} s  {label}")
                    print(f"cpu {redis_cpu(client):7.2f} s  redis")
                    stats = client.info("commandstats")
                    top = sorted(stats.items(), key=lambda kv: -kv[1]["calls"])[:15]
                    for name, value in top:
                        print(f"{name:<28} {value['calls'] / messages:8.1f} per message")
        finally:
            server.stop()
    rate = messages / elapsed
    receipts = int(counts.get("1", 0)) + int(counts.get("2", 0))
    rows = [
        ("engine ceiling (no-op Celery tasks/s, 1 worker)", f"{ceiling:,.0f}"),
        ("messages sent (single segment, dlr-level 3)", f"{messages:,}"),
        ("carrier latency (ms)", f"{latency_ms:g}"),
        ("API accept rate (messages/s, 16 clients)", f"{messages / ingest:,.0f}"),
        ("end to end (messages/s, to the last level-2 receipt)", f"{rate:,.0f}"),
        ("receipts/s (levels 1 + 2)", f"{receipts / elapsed:,.0f}"),
        ("ratio to the engine ceiling", f"{rate / ceiling:.2f}"),
        ("CPU seconds per 1,000 messages (smsq + Redis)", f"{1000 * cpu_used / messages:.2f}"),
        ("Redis commands per message", f"{per_message_commands:.1f}"),
        ("carrier submissions / duplicates", f"{sim['submissions']:,} / {len(sim['duplicates'])}"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile-commands", action="store_true")
    args = parser.parse_args()
    run(args.messages, args.latency_ms, args.concurrency, args.profile_commands)


if __name__ == "__main__":
    main()
