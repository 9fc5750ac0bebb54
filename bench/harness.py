"""Benchmark plumbing: start smsq's processes on loopback, measure CPU and Redis commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
import psutil
import redis

from worker.receipts.tokens import simulator_secret

REPO = Path(__file__).resolve().parents[1]
# Every child shares a server key (receipt tokens in the carriers' callback URLs are made and
# checked with it) and the simulator's receipt secret (its signed batches of receipts).
SERVER_KEY = "bench-server-key"
CHILD_ENV = {
    "SMSQ_SECRET_KEY": SERVER_KEY,
    "SMSQ_CARRIER_RECEIPT_SECRET": simulator_secret(SERVER_KEY),
}


@dataclass
class Processes:
    """Child processes of one benchmark run, stopped together."""

    env: dict[str, str]
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, **self.env, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.children.append(process)
        return process

    def worker(self, queues: str, concurrency: int, name: str, app: str = "worker.tasks") -> None:
        self.start(
            "-m", "celery", "-A", app, "worker", "-Q", queues, "-P", "threads",
            "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "-l", "ERROR",
        )  # fmt: skip

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds used so far by each child and the processes it started (the API's batch
        helper, `producer/batch_process.py`), keyed by the child's role (`role`)."""
        result: dict[str, float] = {}
        for child in self.children:
            label = role([str(a) for a in cast(list[str], child.args)])
            result[label] = result.get(label, 0.0) + tree_cpu_seconds(child.pid)
        return result

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by a process and its living descendants (0 once it is gone)."""
    try:
        process = psutil.Process(pid)
        tree = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in tree:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def role(command: list[str]) -> str:
    """A short name for a child: a worker's `-n` name, else the module it runs."""
    if "-n" in command:
        return "worker " + command[command.index("-n") + 1].split("@")[0]
    args = command[command.index("-m") + 1 :] if "-m" in command else command[1:]
    if args[:1] == ["producer"] and len(args) > 1:
        return args[1]  # carrier-sim, scheduler
    return args[0] if args else "?"


@contextmanager
def processes(env: dict[str, str]) -> Iterator[Processes]:
    group = Processes({**CHILD_ENV, **env})
    try:
        yield group
    finally:
        group.stop()


def redis_commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def wait_http(url: str, timeout: float = 120.0) -> None:  # cold starts compile bytecode
    """Until `url` answers below 500 (a 5xx or no answer: look again in 0.1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.05) -> float:
    """Wait for `predicate`; return the monotonic time it became true (raises on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError("benchmark condition not reached in time")


def engine_ceiling(redis_url: str, tasks: int) -> float:
    """No-op Celery tasks/s drained by one worker consumer on the same Redis (the ceiling)."""
    from worker.celery_app import create_app
    from worker.settings import Settings

    app = create_app(Settings(redis_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    client.delete("noop")
    with app.producer_or_acquire() as producer:
        for i in range(tasks):
            app.send_task("bench.noop", args=[f"p{i}"], queue="noop", producer=producer)
    with processes({"SMSQ_REDIS_URL": redis_url}) as group:
        group.worker("noop", 8, "noop", app="bench.noop")
        started = wait_until(lambda: int(client.llen("noop")) < tasks, 60, poll=0.005)
        ended = wait_until(lambda: int(client.llen("noop")) == 0, 120, poll=0.01)
    client.close()
    return tasks / max(ended - started, 1e-9)
