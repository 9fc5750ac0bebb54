"""The whole system for integration tests, all real, all on loopback.

The carrier simulator, a receipt receiver and the API run under uvicorn in threads; the Celery
worker is a real `celery worker` subprocess (threads pool) consuming every queue; the durable
scheduler runs in a thread. Everything talks to the session's Redis.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from producer.api import create_app
from producer.cli import start_batch_watcher
from tests.receiver import Receiver
from tests.servers import serve_app
from worker.celery_app import create_app as create_celery_app
from worker.keys import CreatedKey, KeyStore
from worker.queueing import CeleryPublisher, publishes_directly
from worker.redis_urls import connect
from worker.scheduler import LOCK_KEY, Scheduler
from worker.settings import Settings
from worker.simulator import SimulatorConfig, create_simulator_app

ALL_QUEUES = "otp,normal,bulk,dlr,carrier-dlr"
# Seconds a test's request may take: a batch goes to a helper process at the bulk lane's lower
# CPU priority, which on a loaded 2-core machine took more than 10 s to answer a 2-recipient one.
HTTP_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "integration-test-server-key"  # API and workers must share it (OTP codes)
# What the simulator may sign its receipt requests with (`SimulatorConfig.receipt_secret`).
RECEIPT_SECRET = "whsec_" + base64.b64encode(b"integration-test-receipt-secret!").decode()


def worker_process(
    env: dict[str, str], queues: str = ALL_QUEUES, concurrency: int = 16, name: str = "w1"
) -> subprocess.Popen[bytes]:
    """A real Celery worker process with smsq's tasks."""
    command = [
        sys.executable, "-m", "celery", "-A", "worker.tasks", "worker", "-Q", queues,
        "-P", "threads", "-c", str(concurrency), "-n", f"{name}@%h", "--without-gossip",
        "--without-mingle", "--without-heartbeat", "-l", "WARNING",
    ]  # fmt: skip
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, env=full_env, cwd=REPO, stdin=subprocess.DEVNULL)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@dataclass
class Stack:
    """Handles on a running system."""

    redis_url: str
    api_url: str
    sim_url: str
    receiver_url: str
    receiver: Receiver
    key: CreatedKey
    redis: redis.Redis
    worker_env: dict[str, str]
    workers: list[subprocess.Popen[bytes]]
    http: httpx.Client

    def send(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.http.post(f"{self.api_url}/sms/send", json=body, headers=headers)

    def message(self, message_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.api_url}/sms/{message_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def sim_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.sim_url}/stats", timeout=10).json()
        return result

    def wait_status(
        self, message_id: str, statuses: set[str], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll GET /sms/{id} until the message is in one of `statuses`; return it."""
        message: dict[str, Any] = wait_for(
            lambda: (m := self.message(message_id)) and m["status"] in statuses and m,
            timeout,
            f"message {message_id} never reached {statuses}",
        )
        return message


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `predicate` returns something truthy; return it or fail with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    value = predicate()
    if value:
        return value
    raise AssertionError(what)


def worker_stats(settings: Settings, workers: int) -> dict[str, Any]:
    """`celery inspect stats` of every worker, asked again until all `workers` answered: a
    busy worker on a loaded machine misses a single ask's few seconds."""
    app = create_celery_app(settings)

    def answered() -> dict[str, Any] | None:
        stats = app.control.inspect(timeout=3, limit=workers).stats() or {}
        return stats if len(stats) >= workers else None

    try:
        result: dict[str, Any] = wait_for(answered, 60, f"not all {workers} workers answered")
        return result
    finally:
        app.close()


@contextmanager
def run_scheduler(redis_url: str, settings: Settings) -> Iterator[Scheduler]:
    client = connect(redis_url)  # any URL smsq accepts, Redis Sentinel too
    publisher = CeleryPublisher(
        create_celery_app(settings), client, direct=publishes_directly(settings)
    )
    scheduler = Scheduler(client, publisher)
    thread = threading.Thread(target=scheduler.run, name="scheduler", daemon=True)
    thread.start()
    watcher_stop = start_batch_watcher(settings)
    try:
        # A scheduler another test killed holds the lock until it lapses (10 s): the system is
        # up once this one leads, so nothing scheduled waits and `scheduler_up` reads 1.
        wait_for(
            lambda: client.get(LOCK_KEY) == scheduler.token.encode(), 30,
            "the scheduler never took the lock",
        )  # fmt: skip
        yield scheduler
    finally:
        watcher_stop.set()
        scheduler.stop()
        thread.join(10)
        client.close()


@contextmanager
def running_stack(
    redis_url: str,
    *,
    sim: SimulatorConfig | None = None,
    receiver: Receiver | None = None,
    workers: int = 1,
    concurrency: int = 16,
    worker_queues: list[str] | None = None,
    broker_url: str | None = None,
    worker_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Run the whole system; `worker_queues` gives one worker process per entry instead;
    `worker_env`: more settings for the workers."""
    receiver = receiver or Receiver()
    with ExitStack() as stack:
        sim_url = stack.enter_context(
            serve_app(create_simulator_app(sim or SimulatorConfig(receipt_delay=0.05)))
        )
        receiver_url = stack.enter_context(serve_app(receiver.app()))
        settings = Settings(
            redis_url=redis_url,
            carrier_url=sim_url,
            dlr_allow_private=["127.0.0.0/8"],
            secret_key=SECRET_KEY,
            carrier_receipt_secret=RECEIPT_SECRET,
            broker_url=broker_url,
        )
        api_url = stack.enter_context(serve_app(create_app(settings)))
        env = {
            "SMSQ_REDIS_URL": redis_url,
            "SMSQ_CARRIER_URL": sim_url,
            "SMSQ_PUBLIC_URL": api_url,
            "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_WORKER_CONCURRENCY": str(concurrency),
            "SMSQ_SECRET_KEY": SECRET_KEY,
        }
        if broker_url:
            env["SMSQ_BROKER_URL"] = broker_url
        env.update(worker_env or {})
        lanes = worker_queues or [ALL_QUEUES] * workers
        processes = [
            worker_process(env, queues, concurrency=concurrency, name=f"w{i}")
            for i, queues in enumerate(lanes)
        ]
        for process in processes:
            stack.callback(stop_process, process)
        stack.enter_context(run_scheduler(redis_url, settings))
        client = connect(redis_url, decode_responses=True)
        stack.callback(client.close)
        key = KeyStore(client).create("tests")
        http = httpx.Client(
            headers={"authorization": f"Bearer {key.api_key}"}, timeout=HTTP_TIMEOUT
        )
        stack.callback(http.close)
        yield Stack(
            redis_url=redis_url,
            api_url=api_url,
            sim_url=sim_url,
            receiver_url=receiver_url,
            receiver=receiver,
            key=key,
            redis=client,
            worker_env=env,
            workers=processes,
            http=http,
        )
