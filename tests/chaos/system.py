"""The whole system for a chaos run, every part a real process: Redis (AOF), the carrier
simulator, the API, Celery workers and the scheduler (with the reconciler); only the receipt
receiver runs in this process. Each part can be killed and started again on its port.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import redis

from bench.harness import wait_http
from producer.schemas import SendRequest
from producer.submission import accept_messages
from producer.validation import build_message
from tests.chaos.counts import FINAL, ChaosResult, Sent, Stored, count
from tests.chaos.parts import Child, Receiver, Served, python
from worker.celery_app import create_app as create_celery_app
from worker.embedded_redis import EmbeddedRedis, free_port
from worker.keys import KeyStore
from worker.queueing import CeleryPublisher
from worker.settings import Settings
from worker.store import Message, Store

SECRET_KEY = "chaos-run-server-key-0123456789"
SEND_QUEUES = "otp,normal,bulk"
WATCHED = ("submit", "receipt", "inbox")  # watch lists that empty when a run is done
RECEIPT_QUEUES = "dlr,carrier-dlr"  # each its own worker, as `smsq up` runs them
# Fast enough for a run of seconds, slow enough to be true: a claim is stale after 4 s (no
# carrier request can last longer: 1 s connect + 1 s read). Receipts keep the production
# deadline (10 s): a receiver slowed by a loaded machine must not look like a failure.
TIMINGS = {
    "SMSQ_CARRIER_CONNECT_TIMEOUT": "1", "SMSQ_CARRIER_READ_TIMEOUT": "1",
    "SMSQ_DLR_CONNECT_TIMEOUT": "3", "SMSQ_DLR_TIMEOUT": "10",
    "SMSQ_RECONCILE_INTERVAL": "0.5", "SMSQ_RECONCILE_GRACE": "5",
    "SMSQ_RECONCILE_CLAIM_LEASE": "4", "SMSQ_RECONCILE_RECEIPT_DEADLINE": "300",
    "SMSQ_RECONCILE_UNACKED_AFTER": "15",
}  # fmt: skip


@dataclass
class Layout:
    """How a run is built: the simulator's settings, the send workers, their pool."""

    sim: dict[str, Any] = field(default_factory=dict)
    send_workers: int = 2
    pool: str = "threads"  # or prefork, to have pool children to kill
    concurrency: int = 16
    env: dict[str, str] = field(default_factory=dict)  # settings over TIMINGS
    start_timeout: float = 120.0  # for the simulator, then the API, to answer (a loaded machine)


class ChaosSystem:
    """Start, break and restart the parts; submit traffic; count the outcome."""

    def __init__(self, workdir: Path, layout: Layout | None = None) -> None:
        self.dir = workdir
        self.layout = layout or Layout()
        ports = [free_port() for _ in range(4)]
        self.redis_port, self.sim_port, self.api_port, receiver_port = ports
        self.redis_server = EmbeddedRedis(workdir / "redis", port=self.redis_port)
        self.client = redis.Redis.from_url(self.redis_server.url, decode_responses=True)  # lazy
        self.store = Store(self.client)
        self.receiver = Receiver()
        self.receiver_server = Served(self.receiver.app(), receiver_port)
        self.receipt_url = f"http://127.0.0.1:{receiver_port}/r"
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.env = {
            "SMSQ_REDIS_URL": self.redis_server.url, "SMSQ_CARRIER_URL": self.sim_url,
            "SMSQ_PUBLIC_URL": f"http://127.0.0.1:{self.api_port}",
            "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8", "SMSQ_SECRET_KEY": SECRET_KEY,
            "SMSQ_WORKER_CONCURRENCY": str(self.layout.concurrency), **TIMINGS, **self.layout.env,
        }  # fmt: skip
        self.sim = self._child("sim", python("-m", "producer", "carrier-sim", *self._sim_flags()))
        self.api = self._child("api", python(
            "-m", "uvicorn", "producer.api:create_app", "--factory", "--port", str(self.api_port),
            "--log-level", "warning", "--no-access-log",
        ))  # fmt: skip
        self.send_workers = [
            self._worker(f"send{i}", SEND_QUEUES, self.layout.pool)
            for i in range(self.layout.send_workers)
        ]
        self.receipt_workers = [
            self._worker(queue, queue, "threads") for queue in RECEIPT_QUEUES.split(",")
        ]
        self.scheduler = self._child("scheduler", python("-m", "producer", "scheduler"))
        self.sent: list[Sent] = []
        self.started_at = 0.0
        self.restarts = 0

    def _child(self, name: str, command: list[str]) -> Child:
        return Child(name, command, self.env, self.dir)

    def _worker(self, name: str, queues: str, pool: str) -> Child:
        concurrency = self.layout.concurrency if pool == "threads" else 3
        return self._child(name, python(
            "-m", "celery", "-A", "worker.tasks", "worker", "-Q", queues, "-P", pool,
            "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "WARNING",
        ))  # fmt: skip

    def _sim_flags(self) -> list[str]:
        """The simulator's settings as a scenario file (it takes every setting) plus its port."""
        values = {"receipt_delay": 0.05, "receipt_attempts": 8, **self.layout.sim}
        lines = [f"{key} = {_toml(value)}" for key, value in values.items()]
        (self.dir / "sim.toml").write_text("\n".join(lines) + "\n")
        return ["--port", str(self.sim_port), "--scenario", str(self.dir / "sim.toml")]

    # -- the parts ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every part; if one fails, what did start runs on until `stop()` (`started`
        calls it whatever happens)."""
        self.redis_server.start()
        self.key_id = KeyStore(self.client).create("chaos").key.id
        self.receiver_server.start()
        self.start_smsq(with_sim=True)
        wait_http(f"{self.sim_url}/stats", timeout=self.layout.start_timeout)
        wait_http(f"http://127.0.0.1:{self.api_port}/healthz", timeout=self.layout.start_timeout)

    def start_smsq(self, *, with_sim: bool = False) -> None:
        """Every smsq process (and the simulator, the first time)."""
        for part in [self.sim] * with_sim + [self.api, *self.workers(), self.scheduler]:
            part.start()

    def workers(self) -> list[Child]:
        return [*self.send_workers, *self.receipt_workers]

    def revive(self) -> None:
        """Restart an smsq process that died on its own, as compose's restart policy does
        (kombu can crash a worker while Redis restarts; see docs/reliability.md)."""
        for part in [self.api, *self.workers(), self.scheduler]:
            if part.exited():
                part.start()
                self.restarts += 1

    def kill_smsq(self) -> None:
        """SIGKILL every smsq process (not the carrier, not Redis)."""
        for part in [self.api, *self.workers(), self.scheduler]:
            part.kill()

    def stop(self) -> None:
        """Stop every part that runs, however far `start()` got."""
        parts = [self.scheduler, *self.workers(), self.api, self.sim]
        try:
            for part in parts:
                part.terminate()
            for part in parts:
                part.wait(timeout=10)
        finally:
            try:
                self.receiver_server.stop()
                self.client.close()
            finally:
                self.redis_server.stop()

    def running(self) -> list[str]:
        """Names of the processes (and servers) of this run still running."""
        parts = [self.scheduler, *self.workers(), self.api, self.sim]
        names = [p.name for p in parts if p.process is not None and p.process.poll() is None]
        redis_process = self.redis_server.process
        if redis_process is not None and redis_process.poll() is None:
            names.append("redis")
        return names + ["receiver"] * self.receiver_server.running()

    def sim_stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], httpx.get(f"{self.sim_url}/stats", timeout=30).json())

    # -- traffic --------------------------------------------------------------------------------
    def submit(
        self, bodies: Sequence[dict[str, Any]], *, lose_every: int = 0, per_task: int = 1
    ) -> None:
        """Accept messages as the API does (store + task, one transaction, 500 at a time); with
        `lose_every` = n, every n-th is stored without its task: a publish lost in a crash.
        `per_task` > 1: as batch ingest does, up to `per_task` ids of a lane per task."""
        settings = Settings(redis_url=self.redis_server.url, dlr_allow_private=["127.0.0.0/8"])
        publisher = CeleryPublisher(create_celery_app(settings), self.client, direct=True)
        messages = [build_message(SendRequest.model_validate(b), settings, key_id=self.key_id)[0]
                    for b in bodies]  # fmt: skip
        self.started_at = self.started_at or time.monotonic()
        for start in range(0, len(messages), 500):
            chunk = messages[start : start + 500]
            lost = [m for i, m in enumerate(chunk, start) if lose_every and i % lose_every == 0]
            accept_messages(
                self.store, publisher, [m for m in chunk if m not in lost], chunk=per_task
            )
            for message in lost:
                self.store.create(message)
        self.sent += [Sent(m.id, m.segments, _levels(m)) for m in messages]

    def progress(self) -> float:
        """Share of expected carrier submissions made so far."""
        expected = sum(m.segments for m in self.sent) or 1
        return float(self.sim_stats()["submissions"]) / expected

    def wait_progress(self, share: float) -> None:
        timeout = 60 + share * sum(m.segments for m in self.sent) / 20  # ≥ 20 segments/s
        _wait(lambda: self.revived(self.progress() >= share), timeout, f"never {share:.0%} sent")

    def revived(self, condition: bool) -> bool:
        self.revive()
        return condition

    def statuses(self) -> dict[str, str]:
        pipe = self.client.pipeline(transaction=False)
        for message in self.sent:
            pipe.hget(f"smsq:msg:{message.id}", "status")
        return {m.id: str(s) for m, s in zip(self.sent, pipe.execute(), strict=True)}

    def wait_done(self, timeout: float, settle: float = 30.0) -> None:
        """Until every message is final, every requested receipt taken and nothing left to
        do; or until nothing has moved for `settle` seconds with every queue and watch list
        empty (what is still missing then is lost, and counted so)."""
        expected = sum(len(m.levels) for m in self.sent)
        try:
            _wait(self._done(expected, settle), timeout, "the run did not finish")
        except AssertionError:
            raise AssertionError(f"the run did not finish: {self.where(expected)}") from None

    def where(self, expected_receipts: int) -> dict[str, Any]:
        """What is left, for a failure message."""
        left: dict[str, Any] = {"statuses": dict(Counter(self.statuses().values()))}
        left["receipts"] = f"{self.receiver.delivered()} of {expected_receipts}"
        for key in ("watch:submit", "watch:receipt", "watch:delivery", "schedule"):
            left[key] = self.client.zcard(f"smsq:{key}")
        for queue in (*SEND_QUEUES.split(","), *RECEIPT_QUEUES.split(",")):
            left[queue] = self.client.llen(queue)
        left["counters"] = self.store.counters()
        return left

    def _done(self, expected: int, settle: float) -> Callable[[], bool]:
        seen: list[object] = [None, time.monotonic()]  # the last state, and when it changed

        def done() -> bool:
            self.revive()
            statuses = Counter(self.statuses().values())
            idle = not any(self.client.zcard(f"smsq:watch:{k}") for k in WATCHED) and not any(
                self.client.llen(q) for q in (*SEND_QUEUES.split(","), *RECEIPT_QUEUES.split(","))
            )
            state = (self.receiver.delivered(), sorted(statuses.items()))
            if state != seen[0]:
                seen[:] = [state, time.monotonic()]
            unfinished = sum(n for s, n in statuses.items() if s not in FINAL)
            if self.receiver.delivered() >= expected and not unfinished and idle:
                return True
            return idle and time.monotonic() - cast(float, seen[1]) > settle

        return done

    def result(self, scenario: str) -> ChaosResult:
        stats = self.sim_stats()
        notes = self.store.counters()
        stored, attempts = self.stored()
        notes["max_send_attempts"] = max(attempts, default=0)
        notes["carrier_refusals"] = sum(stats["errors"].values())
        arrivals = self.receiver.snapshot()
        notes["receipts_refused_by_client"] = sum(a.answered >= 300 for a in arrivals)
        if self.restarts:
            notes["supervisor_restarts"] = self.restarts
        return count(
            scenario, self.sent, stats["by_client_ref"], int(stats.get("deduplicated", 0)),
            arrivals, stored, time.monotonic() - self.started_at, notes,
        )  # fmt: skip

    def stored(self) -> tuple[dict[str, Stored], list[int]]:
        """Each message as stored (status, outcome, times final), and its send attempts."""
        pipe = self.client.pipeline(transaction=False)
        for message in self.sent:
            pipe.hmget(f"smsq:msg:{message.id}", ["status", "submit_outcome", "send_attempts"])
            pipe.lrange(f"smsq:msg:{message.id}:events", 0, -1)
        replies = pipe.execute()
        stored, attempts = {}, []
        for message, (status, outcome, tries), events in zip(
            self.sent, replies[::2], replies[1::2], strict=True
        ):
            finals = sum(orjson.loads(e)["event"] in FINAL for e in events)
            stored[message.id] = Stored(status or "", outcome or "", finals)
            attempts.append(int(tries or 0))
        return stored, attempts


def _levels(message: Message) -> tuple[int, ...]:
    if not message.dlr:
        return ()
    return {1: (1,), 2: (2,), 3: (1, 2)}[message.dlr_level]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.5)
