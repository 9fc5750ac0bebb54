"""The API benchmark: how fast the API answers, and whether it stays responsive while ingesting.

`python -m bench api [--seconds 10] [--connections 32] [--recipients 100000] [--only 1,2]`

Starts its own Redis (AOF on) and the API (`python -m producer.api`: uvicorn, one or more
processes on one port; no Celery workers: only the API is measured, accepted messages wait in
their queues).

1. Throughput, with one API process and then with two (`--processes 2`): `wrk` with
   `--connections` connections for `--seconds` against `GET /healthz`, then against
   `POST /sms/send` with the seed body (no receipt). Prints requests/s and the ratio of the two
   (the framework's own speed is the baseline; target ≥ 0.6).
2. Responsiveness during ingest (one API process, its batch helper started by a first small
   batch): while one `POST /sms/batch` of
   `--recipients` templated recipients is uploaded and accepted, a `POST /otp/send` every
   50 ms and a `GET /healthz` every 20 ms, each on its own connection. Prints their p50 / p99
   (targets: OTP p99 < 100 ms, /healthz p99 < 50 ms) and the batch's accept rate.

Needs `wrk` on the PATH (Debian: `apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import redis

from bench.harness import processes, wait_http
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.keys import KeyStore

SEED_BODY = {"to": "+14155552671", "from": "smsq", "content": "Your code is 123456"}
SEND_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = '{body}'
"""
# OTP limits and the resend cooldown off: the probe measures latency, not the send policy.
ENV = {
    "SMSQ_SECRET_KEY": "bench-server-key",
    "SMSQ_OTP_LIMIT_NUMBER": "0",
    "SMSQ_OTP_LIMIT_PREFIX": "0",
    "SMSQ_OTP_COOLDOWN_SECONDS": "0",
    "SMSQ_LOG_LEVEL": "WARNING",
}
_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+([0-9]+)")


def wrk(url: str, seconds: float, connections: int, script: Path | None = None) -> float:
    """Requests/s `wrk` sustained against `url` (every answer must be 2xx)."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "5s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    errors = _ERRORS.search(out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} answers were not 2xx:\n{out}")
    found = _RATE.search(out)
    if found is None:
        raise RuntimeError(f"no rate in wrk's output:\n{out}")
    return float(found.group(1))


@contextmanager
def api_process(redis_url: str, workers: int, tmp: Path) -> Iterator[str]:
    """The API under uvicorn (`workers` processes); yields its URL."""
    port = free_port()
    metrics = tmp / f"metrics-{port}"
    metrics.mkdir()
    env = {**ENV, "SMSQ_REDIS_URL": redis_url, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    with processes(env) as group:
        group.start("-m", "producer.api", "--port", str(port), "--processes", str(workers))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz")
        if workers > 1:
            time.sleep(3)  # every worker process up, not just the first
        yield url


def throughput(
    redis_url: str, key: str, workers: int, seconds: float, connections: int, tmp: Path
) -> list[tuple[str, str]]:
    script = tmp / "send.lua"
    body = orjson.dumps(SEED_BODY).decode()
    script.write_text(SEND_LUA.format(key=key, body=body))
    with api_process(redis_url, workers, tmp) as url:
        healthz = wrk(f"{url}/healthz", seconds, connections)
        send = wrk(f"{url}/sms/send", seconds, connections, script)
    label = f"{workers} API process{'es' if workers > 1 else ''}"
    return [
        (f"{label}: GET /healthz (requests/s)", f"{healthz:,.0f}"),
        (f"{label}: POST /sms/send (requests/s)", f"{send:,.0f}"),
        (f"{label}: ratio send / healthz (target ≥ 0.6)", f"{send / healthz:.2f}"),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Probe(threading.Thread):
    """Sends one request every `every` seconds until stopped; keeps each one's latency (ms)."""

    def __init__(self, url: str, key: str, every: float, otp: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.every, self.otp = url, key, every, otp
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                started = time.perf_counter()
                if self.otp:
                    reply = client.post("/otp/send", json={"to": f"+1415{6_000_000 + n:07d}"})
                else:
                    reply = client.get("/healthz")
                self.latencies.append((time.perf_counter() - started) * 1000)
                self.failures += reply.status_code >= 300
                self.stop.wait(self.every)


def during_ingest(redis_url: str, key: str, recipients: int, tmp: Path) -> list[tuple[str, str]]:
    body = orjson.dumps(
        {
            "content": "Hi {name}, our sale starts tomorrow",
            "recipients": [
                {"to": f"+1415{5_550_000 + i:07d}", "vars": {"name": f"c{i}"}}
                for i in range(recipients)
            ],
        }
    )
    with api_process(redis_url, 1, tmp) as url:
        probes = [Probe(url, key, 0.05, otp=True), Probe(url, key, 0.02, otp=False)]
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            # A first small batch starts the API's batch helper process (as the first batch of
            # a deployment does); the measured one goes through it.
            warm = orjson.dumps({"content": "hi", "recipients": ["+14155552671"]})
            client.post("/sms/batch", content=warm).raise_for_status()
            time.sleep(5)
            for probe in probes:
                probe.start()
            time.sleep(1)  # a few answers before the batch starts
            started = time.perf_counter()
            reply = client.post("/sms/batch", content=body)
            elapsed = time.perf_counter() - started
            for probe in probes:
                probe.stop.set()
                probe.join(60)
        if reply.status_code != 202:
            raise RuntimeError(f"batch refused: {reply.status_code} {reply.text[:300]}")
    otp, health = probes
    return [
        (f"POST /sms/batch, {recipients:,} recipients: accepted in (s)", f"{elapsed:.1f}"),
        ("  accept rate (messages/s)", f"{recipients / elapsed:,.0f}"),
        ("  POST /otp/send meanwhile: count / failures", f"{len(otp.latencies)} / {otp.failures}"),
        ("  POST /otp/send p50 (ms)", f"{statistics.median(otp.latencies):.1f}"),
        ("  POST /otp/send p99 (ms, target < 100)", f"{percentile(otp.latencies, 0.99):.1f}"),
        ("  GET /healthz meanwhile: count", f"{len(health.latencies)}"),
        ("  GET /healthz p50 (ms)", f"{statistics.median(health.latencies):.1f}"),
        ("  GET /healthz p99 (ms, target < 50)", f"{percentile(health.latencies, 0.99):.1f}"),
    ]


def run(seconds: float, connections: int, recipients: int, only: set[str]) -> None:
    if shutil.which("wrk") is None and "1" in only:
        raise SystemExit("bench api needs wrk on the PATH (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        server = EmbeddedRedis(tmp / "redis", appendonly=True)
        redis_url = server.start()
        rows: list[tuple[str, str]] = []
        try:
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            key = KeyStore(client).create("bench").api_key
            client.close()
            if "1" in only:
                for workers in (1, 2):
                    rows += throughput(redis_url, key, workers, seconds, connections, tmp)
                    _print(rows[-3:])
            if "2" in only:
                rows += during_ingest(redis_url, key, recipients, tmp)
        finally:
            server.stop()
    print()
    _print(rows)


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--only", default="1,2", help="scenarios to run: 1, 2 or 1,2")
    args = parser.parse_args()
    run(args.seconds, args.connections, args.recipients, set(args.only.split(",")))


if __name__ == "__main__":
    main()
