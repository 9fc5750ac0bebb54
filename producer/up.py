"""`smsq up`: the whole system on one machine, as one process group.

Starts (unless `SMSQ_REDIS_URL` is set) an embedded Redis with AOF under `./.smsq/`, then the
carrier simulator (unless another carrier is configured), the API, one Celery worker process per
lane (otp, normal, bulk) plus one for receipts (dlr, carrier-dlr), and the durable scheduler.
Prints the API URL and a fresh API key; Ctrl-C stops every child, then Redis.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import typer

from worker.embedded_redis import EmbeddedRedis
from worker.keys import KeyStore
from worker.receipts.tokens import up_environment
from worker.redis_urls import connect, redacted
from worker.settings import Settings

WORKER_LANES = (("otp", "otp"), ("normal", "normal"), ("bulk", "bulk"), ("dlr", "dlr,carrier-dlr"))


def redis_url_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / "redis.url"


def resolve_redis_url(settings: Settings) -> str:
    """`SMSQ_REDIS_URL`, else the embedded Redis a running `smsq up` noted, else the default."""
    if settings.redis_url:
        return settings.redis_url
    recorded = redis_url_file(settings)
    if recorded.exists():
        return recorded.read_text().strip()
    return settings.effective_redis_url


def secret_key(settings: Settings) -> str:
    """The server key for keyed hashes: `SMSQ_SECRET_KEY`, else one kept in the data dir."""
    if settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value()
    path = Path(settings.data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def lane_workers(settings: Settings) -> list[tuple[str, str, int]]:
    """(name, queues, processes) of each lane: `SMSQ_LANE_PROCESSES` worker processes for the
    normal and bulk lanes (one Python process uses one core at most), one for otp and dlr."""
    many = ("normal", "bulk")
    return [(n, q, settings.lane_processes if n in many else 1) for n, q in WORKER_LANES]


def worker_command(name: str, queues: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker.tasks", "worker",
        "-Q", queues, "-P", "threads", "-c", str(concurrency), "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
    ]  # fmt: skip


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "producer.api:create_app", "--factory",
        "--host", host, "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


@dataclass
class ProcessGroup:
    """Children started in their own sessions, stopped together."""

    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.children[name] = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def dead(self) -> list[str]:
        return [name for name, p in self.children.items() if p.poll() is not None]

    def stop(self, timeout: float = 15.0) -> None:
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.children.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def child_env(settings: Settings, redis_url: str, key: str) -> dict[str, str]:
    """The environment of every child: this one plus what `up` decided."""
    env = dict(os.environ)  # children inherit the caller's SMSQ_* settings
    env["SMSQ_REDIS_URL"] = redis_url
    env["SMSQ_SECRET_KEY"] = key
    env.update(up_environment(settings, key))  # the simulator signs receipts, the API checks
    env.setdefault("SMSQ_PUBLIC_URL", f"http://{settings.api_host}:{settings.api_port}")
    # Development default: receipts may go to this machine (a local receiver). Production
    # deployments leave SMSQ_DLR_ALLOW_PRIVATE unset, so only public addresses are called.
    env.setdefault("SMSQ_DLR_ALLOW_PRIVATE", "127.0.0.0/8,::1/128")
    if settings.carrier == "sim" and "SMSQ_CARRIER_URL" not in os.environ:
        env["SMSQ_CARRIER_URL"] = f"http://127.0.0.1:{settings.sim_port}"
    return env


def fresh_metrics_dir(settings: Settings) -> Path:
    """`.smsq/metrics`, emptied: where every child writes its Prometheus values (the API's
    `/metrics` adds them up). Values of an earlier run would count twice, so they go."""
    path = (Path(settings.data_dir) / "metrics").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def wait_ready(url: str, group: ProcessGroup, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group.dead():
            raise RuntimeError(f"stopped while starting: {', '.join(group.dead())}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not become ready at {url} within {timeout:.0f} s")


def up(settings: Settings, concurrency: int) -> int:
    """Run everything until Ctrl-C (or a child dies); returns the exit code."""
    data_dir = Path(settings.data_dir)
    embedded: EmbeddedRedis | None = None
    if settings.redis_url:
        redis_url = settings.redis_url
    else:
        embedded = EmbeddedRedis(data_dir / "redis")
        redis_url = embedded.start()
        redis_url_file(settings).write_text(redis_url)
    key = secret_key(settings)
    env = child_env(settings, redis_url, key)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_metrics_dir(settings))
    group = ProcessGroup()
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        if settings.carrier == "sim" and "SMSQ_CARRIER_URL" not in os.environ:
            group.start("carrier-sim", [sys.executable, "-m", "producer", "carrier-sim",
                                        "--port", str(settings.sim_port)], env)  # fmt: skip
        group.start("api", api_command(settings.api_host, settings.api_port), env)
        for name, queues, processes in lane_workers(settings):
            for number in range(1, processes + 1):
                label = name if processes == 1 else f"{name}{number}"
                group.start(f"worker-{label}", worker_command(label, queues, concurrency), env)
        group.start("scheduler", [sys.executable, "-m", "producer", "scheduler"], env)
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        wait_ready(api_url, group)
        client = connect(
            redis_url, sentinel_service=settings.redis_sentinel_service, decode_responses=True
        )
        try:
            created = KeyStore(client).create(f"smsq-up-{int(time.time())}")
        finally:
            client.close()
        _announce(api_url, redis_url, embedded is not None, created.api_key, created.webhook_secret)
        while not stopping:
            if group.dead():
                typer.echo(f"smsq: stopped unexpectedly: {', '.join(group.dead())}", err=True)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        typer.echo("smsq: stopping…", err=True)
        group.stop()
        if embedded is not None:
            embedded.stop()
            redis_url_file(settings).unlink(missing_ok=True)


def _announce(api_url: str, redis_url: str, embedded: bool, api_key: str, secret: str) -> None:
    where = "embedded, AOF under .smsq/redis" if embedded else "SMSQ_REDIS_URL"
    typer.echo(f"smsq is up\n  API       {api_url}   (docs: {api_url}/docs)")
    typer.echo(f"  Redis     {redacted(redis_url)}   ({where})")
    typer.echo(f"  API key   {api_key}")
    typer.echo(f"  receipts signed with {secret}")
    typer.echo("Ctrl-C stops everything.")
