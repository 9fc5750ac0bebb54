"""Campaign benchmarks: batch ingest vs raw pipelined LPUSH, and OTP latency under a bulk backlog.

`python -m bench.campaigns [--recipients 100000] [--otp-seconds 20]`

1. Ingest: `POST /sms/batch` with N templated recipients (one request), timed until the reply,
   i.e. every message validated, stored and queued durably (AOF on). Baseline in the same run:
   raw pipelined `LPUSH` of the same N JSON payloads into the same Redis.
2. OTP latency: while the bulk campaign drains through its own worker (carrier latency 20 ms),
   one OTP every 100 ms through `POST /sms/send`; latency = accept (created_at) → the moment
   its segment was claimed for submission to the carrier. Reports p50 / p99 / max.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.harness import processes, wait_http
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.keys import KeyStore
from worker.store.keys import message_key, segments_key


def raw_lpush_rate(client: redis.Redis, payloads: list[bytes]) -> float:
    client.delete("bench:raw")
    started = time.perf_counter()
    for start in range(0, len(payloads), 1000):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[start : start + 1000]:
            pipe.lpush("bench:raw", payload)  # one command per message, as smsq's own LPUSH
        pipe.execute()
    elapsed = time.perf_counter() - started
    client.delete("bench:raw")
    return len(payloads) / elapsed


def otp_latencies(
    api: httpx.Client, client: redis.Redis, seconds: float
) -> tuple[list[float], int]:
    ids: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reply = api.post(
            "/sms/send",
            json={"to": "+447911123456", "content": "Your code is 123456", "priority": "otp"},
        )
        ids.append(reply.json()["id"])
        time.sleep(0.1)
    time.sleep(3)
    latencies = []
    for message_id in ids:
        created = client.hget(message_key(message_id), "created_at")
        claimed = client.hget(segments_key(message_id), "1:submitted_at")
        if created and claimed:
            latencies.append(float(int(claimed) - int(created)))
    return latencies, len(ids)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(recipients: int, otp_seconds: float) -> None:
    numbers = [f"+1415{n:07d}" for n in range(5_550_000, 5_550_000 + recipients)]
    body = {
        "content": "Hi {name}, our sale starts tomorrow",
        "recipients": [{"to": n, "vars": {"name": f"c{i}"}} for i, n in enumerate(numbers)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=True)
        redis_url = server.start()
        try:
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            baseline = raw_lpush_rate(
                client,
                [orjson.dumps(r) for r in body["recipients"]],
            )
            results = measure(redis_url, client, body, recipients, otp_seconds)
        finally:
            server.stop()
    ingest, latencies, sent, bulk_done = results
    rows = [
        ("raw pipelined LPUSH of the same payloads (per s)", f"{baseline:,.0f}"),
        (f"POST /sms/batch, {recipients:,} recipients (messages/s)", f"{ingest:,.0f}"),
        ("ratio to raw LPUSH", f"{ingest / baseline:.3f}"),
        ("OTPs sent during the bulk drain", f"{sent}"),
        ("bulk messages submitted meanwhile", f"{bulk_done:,}"),
        ("OTP accept→submit p50 (ms)", f"{statistics.median(latencies):.0f}"),
        ("OTP accept→submit p99 (ms)", f"{percentile(latencies, 0.99):.0f}"),
        ("OTP accept→submit max (ms)", f"{max(latencies):.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")


def measure(
    redis_url: str, client: redis.Redis, body: dict[str, Any], recipients: int, otp_seconds: float
) -> tuple[float, list[float], int, int]:
    api_port, sim_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = {
        "SMSQ_REDIS_URL": redis_url,
        "SMSQ_CARRIER_URL": f"http://127.0.0.1:{sim_port}",
        "SMSQ_PUBLIC_URL": api_url,
        "SMSQ_WORKER_CONCURRENCY": "32",
    }
    with processes(env) as group:
        group.start("-m", "producer", "carrier-sim", "--port", str(sim_port),
                    "--latency-ms", "20", "--receipt-delay", "0.5")  # fmt: skip
        group.start("-m", "uvicorn", "producer.api:create_app", "--factory", "--port",
                    str(api_port), "--log-level", "warning", "--no-access-log")  # fmt: skip
        wait_http(f"{api_url}/healthz")
        key = KeyStore(client).create("bench").api_key
        with httpx.Client(
            base_url=api_url, headers={"authorization": f"Bearer {key}"}, timeout=600
        ) as api:
            started = time.perf_counter()
            reply = api.post("/sms/batch", json=body)
            ingest = recipients / (time.perf_counter() - started)
            assert reply.status_code == 202, reply.text
            group.worker("bulk", 32, "bulk")
            group.worker("otp", 8, "otp")
            group.worker("dlr", 8, "dlr")
            group.worker("carrier-dlr", 8, "carrier-dlr")
            time.sleep(3)  # workers start; the bulk backlog begins to drain
            latencies, sent = otp_latencies(api, client, otp_seconds)
            bulk_done = recipients - int(client.llen("bulk"))
    return ingest, latencies, sent, bulk_done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--otp-seconds", type=float, default=20.0)
    args = parser.parse_args()
    run(args.recipients, args.otp_seconds)


if __name__ == "__main__":
    main()
