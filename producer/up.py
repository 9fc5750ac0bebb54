"""`smsq up`: the whole system on one machine, supervised.

1. Takes the data directory's lock (`<data_dir>/up.lock`, `producer.instance`): a second
   `smsq up` there refuses at once, naming the running one, and touches nothing.
2. Checks its ports (API, carrier simulator, embedded Redis) before it starts anything.
3. Starts an embedded Redis with AOF under `<data_dir>/redis` (unless `SMSQ_REDIS_URL` is set).
4. Runs its children under a `Supervisor` (a child that dies is restarted with backoff): the
   carrier simulator (unless another carrier is configured), `SMSQ_API_PROCESSES` API processes
   sharing one listening socket, Celery workers (one process for the otp lane,
   `SMSQ_LANE_PROCESSES` for normal, bulk, dlr and carrier-dlr each) and the scheduler. Their
   output goes to `<data_dir>/logs/<child>.log`.
5. Prints a short block: API URL, docs, the development key and its signing secret, data dir,
   logs. Ctrl-C (or SIGTERM) stops every child, then Redis, and exits 0; a crash loop exits 1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import typer

from producer import devkey
from producer.instance import DataDir, UpLock, holder, server_key
from producer.logfiles import Follower
from producer.supervisor import (
    ChildSpec,
    CrashLoopError,
    Supervisor,
    die_with_parent,
    rotate_logs,
)
from worker.carriers.config import load_carriers
from worker.carriers.smpp import smpp_carriers
from worker.embedded_redis import EmbeddedRedis, free_port, write_private
from worker.keys import KeyStore
from worker.receipts.tokens import up_environment
from worker.redis_urls import connect, redacted
from worker.settings import Settings, simulator_url
from worker.ssrf import loopback_endpoints

WORKER_LANES = (
    ("otp", "otp"), ("normal", "normal"), ("bulk", "bulk"), ("dlr", "dlr"),
    ("carrier-dlr", "carrier-dlr"),
)  # fmt: skip
# Development default: receipts may go to this machine (a local receiver). Production
# deployments leave SMSQ_DLR_ALLOW_PRIVATE unset, so only public addresses are called.
DEV_ALLOW_PRIVATE = ("127.0.0.0/8", "::1/128")
READY_TIMEOUT = 120.0  # a loaded two-core machine starts a dozen Python processes slowly


class StartError(Exception):
    """`smsq up` cannot start; the message is the one line it prints."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    concurrency: int | None = None  # threads per worker process; None: SMSQ_WORKER_CONCURRENCY
    processes: int | None = None  # worker processes per lane; None: SMSQ_LANE_PROCESSES
    verbose: bool = False  # also stream the children's logs to the terminal


def lane_workers(settings: Settings, processes: int | None = None) -> list[tuple[str, str, int]]:
    """(name, queue, processes) of each lane: one process for otp, `processes` (default
    `SMSQ_LANE_PROCESSES`) for the others (one Python process uses one core at most)."""
    many = processes or settings.lane_processes
    return [(n, q, 1 if n == "otp" else many) for n, q in WORKER_LANES]


def numbered(name: str, count: int) -> list[str]:
    """`name` alone, or `name1` … `nameN` when there are several."""
    return [name] if count == 1 else [f"{name}{n}" for n in range(1, count + 1)]


def worker_command(name: str, queues: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker.tasks", "worker",
        "-Q", queues, "-P", "threads", "-c", str(concurrency), "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
    ]  # fmt: skip


def runs_simulator(settings: Settings) -> bool:
    """The configured carrier is the simulator on `SMSQ_SIM_PORT`: `smsq up` runs it."""
    return settings.carrier == "sim" and settings.carrier_url == simulator_url(settings.sim_port)


def runs_connector(settings: Settings) -> bool:
    """An SMPP carrier is configured: `smsq up` runs the connector that holds its binds."""
    if not settings.carriers_file:
        return False
    try:
        config = load_carriers(settings)
    except ValueError:
        return False  # the workers say what is wrong with the file
    return bool(smpp_carriers(config))


def children(settings: Settings, options: UpOptions, api_fd: int) -> list[ChildSpec]:
    """Every child of `smsq up`, in start order."""
    python = sys.executable
    concurrency = options.concurrency or settings.worker_concurrency
    specs = []
    if runs_simulator(settings):
        sim = [python, "-m", "producer", "carrier-sim", "--port", str(settings.sim_port)]
        specs.append(ChildSpec("carrier-sim", sim))
    serve = [python, "-m", "producer.serve", str(api_fd)]
    specs += [ChildSpec(n, serve, (api_fd,)) for n in numbered("api", settings.api_processes)]
    for lane, queues, count in lane_workers(settings, options.processes):
        specs += [
            ChildSpec(f"worker-{label}", worker_command(label, queues, concurrency))
            for label in numbered(lane, count)
        ]
    specs.append(ChildSpec("scheduler", [python, "-m", "producer", "scheduler"]))
    if runs_connector(settings):
        specs.append(ChildSpec("smpp", [python, "-m", "producer", "smpp"]))
    return specs


def allow_private(settings: Settings) -> list[str]:
    """Receipt destinations allowed although private: SMSQ_DLR_ALLOW_PRIVATE, else loopback."""
    if "dlr_allow_private" in settings.model_fields_set:
        return list(settings.dlr_allow_private)
    return list(DEV_ALLOW_PRIVATE)


def own_ports(settings: Settings, redis_port: int | None) -> list[int]:
    """The loopback ports of the API, the simulator and the embedded Redis, which the
    development allow-list would otherwise let a `dlr-url` reach
    (`http://127.0.0.1:<sim port>/reset`)."""
    ports = {settings.api_port, settings.sim_port}
    return sorted(ports | ({redis_port} if redis_port else set()))


def denied(settings: Settings, redis_port: int | None) -> list[str]:
    """Receipt destinations refused although allow-listed: SMSQ_DLR_DENY and smsq's own ports."""
    return [*settings.dlr_deny, *loopback_endpoints(own_ports(settings, redis_port))]


def child_env(
    settings: Settings, redis_url: str, key: str, metrics: Path, redis_port: int | None = None
) -> dict[str, str]:
    """The environment of every child: this one plus what `up` decided."""
    env = dict(os.environ)  # children inherit the caller's SMSQ_* settings
    env |= {
        "SMSQ_REDIS_URL": redis_url,
        "SMSQ_SECRET_KEY": key,
        "SMSQ_PUBLIC_URL": settings.effective_public_url,
        "SMSQ_CARRIER_URL": settings.carrier_url,
        "SMSQ_DLR_ALLOW_PRIVATE": ",".join(allow_private(settings)),
        "SMSQ_DLR_DENY": ",".join(denied(settings, redis_port)),
        # Every child writes its Prometheus values there; the API's /metrics adds them up.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    env.update(up_environment(settings, key))  # the simulator signs receipts, the API checks
    return env


def listen(host: str, port: int, what: str) -> socket.socket:
    """A listening socket on the port, or StartError naming it."""
    try:
        sock = socket.create_server((host, port), backlog=2048)
    except OSError as exc:
        raise StartError(f"port {port} ({what}) is not free: {exc.strerror}") from None
    return sock


def check_free(host: str, port: int, what: str) -> None:
    listen(host, port, what).close()


def start_redis(settings: Settings, data: DataDir, port: int) -> tuple[str, EmbeddedRedis | None]:
    """The Redis to run on: `SMSQ_REDIS_URL`, else an embedded one started on `port` (AOF
    under `<data_dir>/redis`). Its URL is noted in the data directory for the CLI."""
    embedded: EmbeddedRedis | None = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        embedded = EmbeddedRedis(
            data.path / "redis", port=port, start_new_session=True, preexec_fn=die_with_parent
        )
        try:
            url = embedded.start()
        except (OSError, RuntimeError, redis.RedisError) as exc:
            embedded.stop()
            log = data.path / "redis" / "redis.log"
            raise StartError(f"the embedded Redis did not start ({exc}); its log: {log}") from None
    write_private(data.redis_url, url)
    return url, embedded


def fresh_metrics_dir(data: DataDir) -> Path:
    """`<data_dir>/metrics`, emptied: values of an earlier run would count twice."""
    path = data.metrics.resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def say(line: str) -> None:
    typer.echo(line, err=True)


def up(settings: Settings, options: UpOptions) -> int:
    """Run everything until Ctrl-C / SIGTERM (0) or a crash loop (1); 1 if it cannot start."""
    data = DataDir.of(settings)
    lock = UpLock(data)
    if not lock.acquire():
        facts = holder(data) or {}
        say(
            f"smsq: already running in {data.path} (pid {facts.get('pid', '?')}, "
            f"{facts.get('api_url', 'starting')}); stop it first or set another SMSQ_DATA_DIR"
        )
        return 1
    stopping = threading.Event()
    previous = {
        s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return _run(settings, options, data, lock, stopping)
    except StartError as exc:
        say(f"smsq: {exc}")
        return 1
    finally:
        lock.release()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(
    settings: Settings, options: UpOptions, data: DataDir, lock: UpLock, stopping: threading.Event
) -> int:
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    redis_port = free_port()
    own_redis = None if settings.redis_url else redis_port
    lock.record(
        api_url=api_url, carrier_url=settings.carrier_url,
        dlr_allow_private=allow_private(settings), dlr_deny=denied(settings, own_redis),
    )  # fmt: skip
    with listen(settings.api_host, settings.api_port, "API; choose another with --port") as api:
        if runs_simulator(settings):
            check_free("127.0.0.1", settings.sim_port, "carrier simulator, SMSQ_SIM_PORT")
        if not settings.redis_url:
            check_free("127.0.0.1", redis_port, "embedded Redis")
        redis_url, embedded = start_redis(settings, data, redis_port)
        try:
            key = settings.secret_key.get_secret_value() or server_key(data)
            env = child_env(settings, redis_url, key, fresh_metrics_dir(data), own_redis)
            dev = _dev_key(settings, redis_url, data)
            if stopping.is_set():
                return 0
            return _supervise(settings, options, data, env, api, stopping, _summary(
                api_url, redis_url, embedded is not None, dev, data,
                own_ports(settings, own_redis),
            ))  # fmt: skip
        finally:
            if embedded is not None:
                embedded.stop()
            data.redis_url.unlink(missing_ok=True)


def _dev_key(settings: Settings, redis_url: str, data: DataDir) -> devkey.DevKey:
    client = connect(
        redis_url, sentinel_service=settings.redis_sentinel_service, decode_responses=True
    )
    try:
        return devkey.ensure(KeyStore(client), data)
    finally:
        client.close()


def _supervise(
    settings: Settings,
    options: UpOptions,
    data: DataDir,
    env: dict[str, str],
    api: socket.socket,
    stopping: threading.Event,
    summary: str,
) -> int:
    rotate_logs(data.logs)
    supervisor = Supervisor(env, data.logs, say)
    streaming = _stream_logs(data, stopping) if options.verbose else None
    try:
        for spec in children(settings, options, api.fileno()):
            supervisor.start(spec)
        if not _wait_ready(f"http://{settings.api_host}:{settings.api_port}", supervisor, stopping):
            return 0
        typer.echo(summary)
        while not stopping.wait(0.5):
            supervisor.poll()
        return 0
    except CrashLoopError as exc:
        say(f"smsq: {exc}")
        return 1
    finally:
        say("smsq: stopping…")
        stopping.set()
        supervisor.stop()
        if streaming is not None:
            streaming.join(5)


def _wait_ready(url: str, supervisor: Supervisor, stopping: threading.Event) -> bool:
    """True once the API answers /readyz; False if asked to stop first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not stopping.is_set():
        supervisor.poll()
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise StartError(
                f"the API did not become ready at {url} within {READY_TIMEOUT:.0f} s; "
                "see `smsq logs`"
            )
        stopping.wait(0.2)
    return False


def _stream_logs(data: DataDir, stopping: threading.Event) -> threading.Thread:
    """`--verbose`: every child's log lines on the terminal too, prefixed with its name."""

    def run() -> None:
        follower = Follower(data.logs, from_start=True)
        try:
            while not stopping.wait(0.2):
                for name, line in follower.poll():
                    typer.echo(f"{name} | {line}", err=True)
        finally:
            follower.close()

    thread = threading.Thread(target=run, name="smsq-logs", daemon=True)
    thread.start()
    return thread


def _summary(
    api_url: str,
    redis_url: str,
    embedded: bool,
    dev: devkey.DevKey,
    data: DataDir,
    own: list[int],
) -> str:
    where = f"embedded, AOF in {data.path / 'redis'}" if embedded else "SMSQ_REDIS_URL"
    rows: list[tuple[str, Any]] = [
        ("API", api_url),
        ("docs", f"{api_url}/docs"),
        ("API key", dev.api_key),
        ("DLR secret", dev.secret),
        ("data dir", data.path.resolve()),
        ("Redis", f"{redacted(redis_url)}  ({where})"),
        ("logs", f"{data.logs.resolve()}/<child>.log  (smsq logs [CHILD] [-f])"),
        ("receipts", "may go to this machine, but not to ports "
                     f"{', '.join(map(str, own))} (smsq's own)"),
    ]  # fmt: skip
    lines = ["smsq is up"] + [f"  {label:<12}{value}" for label, value in rows]
    return "\n".join([*lines, "The CLI uses this key by default; Ctrl-C stops everything."])
