"""`smsq up` as a newcomer runs it, end to end: the README's request gets both receipts, the
CLI and the library find it, kill -9 of a child loses nothing, a second `smsq up` leaves it
intact, the development key survives a restart, Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
import redis
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from producer import cli
from tests.chaos.system import TIMINGS
from tests.integration.stack import REPO, wait_for
from tests.receiver import Receiver
from tests.servers import serve_app
from worker.embedded_redis import free_port
from worker.store import Store

pytestmark = pytest.mark.integration

TO = "+14155552671"
FINAL = {"delivered", "undelivered", "expired", "rejected", "failed"}
BLOCK = ["API", "docs", "API key", "DLR secret", "data dir", "Redis", "logs", "receipts"]


def readme_block(marker: str, pattern: str) -> str:
    """The code the README shows after `<!-- marker`."""
    block = (REPO / "README.md").read_text().split(f"<!-- {marker}", 1)[1]
    match = re.search(pattern, block, re.S)
    assert match, f"the README's {marker} is missing"
    return match.group(1)


def readme_send_body() -> dict[str, object]:
    """The JSON body of the README's curl example."""
    body: dict[str, object] = orjson.loads(readme_block("readme-send-example", r"-d '(\{.*?\})'"))
    return body


class Up:
    """`smsq up` in a directory of its own, started as a newcomer starts it: no SMSQ_* setting
    but those given, ports nobody else uses."""

    def __init__(self, cwd: Path, *args: str, **settings: str) -> None:
        self.cwd = cwd
        self.args = ["--port", str(free_port()), *args]
        self.env = environment(SMSQ_SIM_PORT=str(free_port()), **TIMINGS, **settings)
        self.api_url = f"http://127.0.0.1:{self.args[1]}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> None:
        """Start it (with `args` too) and wait until it printed its block."""
        self.cwd.mkdir(parents=True, exist_ok=True)
        with (self.cwd / "stdout").open("wb") as out, (self.cwd / "stderr").open("wb") as err:
            self.process = process = subprocess.Popen(
                [sys.executable, "-m", "producer", "up", *self.args, *args],
                env=self.env, cwd=self.cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        wait_for(
            lambda: "Ctrl-C stops everything" in self.stdout() or process.poll() is not None,
            120,
            "smsq up did not start",
        )
        assert process.poll() is None, self.stdout() + self.stderr()

    def interrupt(self) -> int:
        """Ctrl-C; the exit code (SIGKILL after a minute)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stdout(self) -> str:
        return (self.cwd / "stdout").read_text()

    def stderr(self) -> str:
        return (self.cwd / "stderr").read_text()

    def block(self) -> dict[str, str]:
        """The summary it printed: label → value."""
        rows = [line[2:] for line in self.stdout().splitlines() if line.startswith("  ")]
        return {row[:12].strip(): row[12:] for row in rows}

    @property
    def key(self) -> str:
        return self.block()["API key"]

    def redis_url(self) -> str:
        return (self.cwd / ".smsq" / "redis.url").read_text()

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url, headers={"authorization": f"Bearer {self.key}"}, timeout=30
        )

    def children(self) -> dict[int, str]:
        """pid → command line of each child process."""
        pid = self.pid
        found = {}
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
                found[int(child)] = command.replace(b"\0", b" ").decode()
            except OSError:
                continue
        return found

    def child(self, marker: str) -> list[int]:
        """Pids of the children whose command line contains `marker`."""
        return [pid for pid, command in self.children().items() if marker in command]


def environment(**settings: str) -> dict[str, str]:
    """The caller's environment without SMSQ_* settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
    return env | {"PYTHONPATH": str(REPO)} | settings


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One `smsq up` for the module: 2 API processes, a worker per lane, non-default ports."""
    running = Up(tmp_path_factory.mktemp("project"), "--concurrency", "8", SMSQ_API_PROCESSES="2")
    try:
        running.start()
        yield running
    finally:
        if running.process is not None:
            running.interrupt()


@pytest.fixture
def here(up: Up, monkeypatch: pytest.MonkeyPatch) -> Up:
    """The test runs in the project directory, as a user in a second terminal does."""
    monkeypatch.chdir(up.cwd)
    return up


def smsq(*args: str) -> Result:
    """An `smsq` command, with no SMSQ_* setting: it has to find the running instance."""
    return CliRunner().invoke(cli.app, list(args))


def logged(text: str, *args: str) -> Result:
    """`smsq *args` once its output shows `text` (or it failed): `smsq up` waits for the API,
    not for each worker to print its banner."""

    def shown() -> Result | None:
        result = smsq(*args)
        return result if result.exit_code != 0 or text in result.output else None

    found: Result = wait_for(shown, 60, f"no {text!r} in smsq {' '.join(args)}")
    return found


class TestOutput:
    def test_the_default_output_is_a_short_block(self, up: Up) -> None:
        """URL, docs, key, secret, data dir, Redis, logs; no Celery banner, no JSON log."""
        assert up.stdout().splitlines()[0] == "smsq is up"
        assert list(up.block()) == BLOCK
        assert up.block()["API"] == up.api_url
        assert up.key.startswith("smsq_")
        assert up.block()["DLR secret"].startswith("whsec_")
        api_port = up.api_url.rsplit(":", 1)[1]
        assert api_port in up.block()["receipts"]  # smsq's own ports are refused to dlr-urls
        assert len(up.stdout().splitlines()) == len(BLOCK) + 2
        noise = [line for line in up.stderr().splitlines() if not line.startswith("smsq: ")]
        assert noise == []
        assert "celery" not in up.stdout().lower()
        logs = up.cwd / ".smsq" / "logs"
        # It went here (`smsq up` waits for the API, not for each worker to print its banner).
        wait_for(
            lambda: "celery" in (logs / "worker-dlr.log").read_text().lower(), 60, "no banner"
        )
        assert {"api1.log", "api2.log", "worker-carrier-dlr.log", "scheduler.log"} <= {
            p.name for p in logs.iterdir()
        }

    def test_logs_command_shows_a_childs_log(self, here: Up) -> None:
        """`smsq logs worker-otp` prints its log; `smsq logs` prefixes each line's child."""
        one = logged("otp@", "logs", "worker-otp", "-n", "-1")
        assert one.exit_code == 0, one.output
        every = logged("worker-carrier-dlr | ", "logs")
        assert every.exit_code == 0
        assert smsq("logs", "nobody").exit_code == 1


class TestReadme:
    def test_readme_request_gets_both_receipts(self, up: Up) -> None:
        """The README's request yields level-1 and level-2 receipts, by GET."""
        receiver = Receiver()
        with serve_app(receiver.app()) as receiver_url, up.http() as http:
            body = readme_send_body() | {"dlr-url": f"{receiver_url}/"}
            reply = http.post("/sms/send", json=body)
            assert reply.status_code == 202, reply.text
            received = receiver.wait_for(2, timeout=30)
        receipts = [dict(parse_qsl(r.query)) for r in received]
        assert [(r["level"], r["status"]) for r in receipts] == [
            ("1", "accepted"),
            ("2", "delivered"),
        ]
        assert all(r["id"] == reply.json()["id"] for r in receipts)
        assert (up.cwd / ".smsq" / "redis" / "appendonlydir").is_dir()  # AOF on

    def test_readme_library_example_runs_as_is(self, up: Up) -> None:
        """`Producer()` with no arguments and no SMSQ_* setting finds the running smsq up."""
        code = readme_block("readme-library-example", r"```python\n(.*?)```")
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=up.cwd, env=environment(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        message_id, _challenge = done.stdout.split()
        store = Store(redis.Redis.from_url(up.redis_url(), decode_responses=True))
        try:
            wait_for(
                lambda: store.fields(message_id).get("status") == "delivered",
                30,
                "the library's message was not delivered",
            )
        finally:
            store.redis.close()


class TestCli:
    def test_commands_find_the_instance_on_its_non_default_port(self, here: Up) -> None:
        """send, status, keys, carriers check: no key, no URL, no SMSQ_* setting needed."""
        sent = smsq("send", TO, "hello", "--dlr-url", "http://127.0.0.1:9/", "--dlr-level", "1")
        assert sent.exit_code == 0, sent.output
        assert orjson.loads(sent.stdout)["status"] == "queued"
        status = smsq("status", "--timeout", "3")
        assert status.exit_code == 0, status.output
        assert "carrier-dlr@" in status.output
        keys = smsq("keys", "list")
        assert [line.split()[1] for line in keys.output.splitlines()] == ["smsq-up"]
        carriers = smsq("carriers", "check")
        assert carriers.exit_code == 0, carriers.output
        assert "reachable (200)" in carriers.output

    def test_a_no_is_a_non_zero_exit(self, here: Up) -> None:
        """A wrong OTP code exits 1 (printing its JSON); replaying an unknown id exits 1."""
        sent = smsq("otp", "send", "+14155550123")
        assert sent.exit_code == 0, sent.output
        challenge = orjson.loads(sent.stdout)["id"]
        wrong = smsq("otp", "verify", "000000", "--id", challenge)
        assert wrong.exit_code == 1
        assert orjson.loads(wrong.stdout)["valid"] is False
        replay = smsq("dlr", "replay", "0" * 32)
        assert replay.exit_code == 1
        assert "nothing replayed" in replay.output

    def test_an_api_error_is_one_line(self, here: Up) -> None:
        """A 4xx answer: its message and field, one line, exit 1."""
        bad = smsq("send", "12", "hello")
        assert bad.exit_code == 1
        assert bad.output.startswith("smsq: 422: ")
        assert bad.output.count("\n") == 1


class TestSecondUp:
    def test_a_second_up_refuses_and_leaves_the_first_intact(self, here: Up) -> None:
        """Same data dir: one line naming the running PID and URL, exit 1; its Redis URL and
        metrics stay; the first keeps answering. Same port, other dir: the port is named."""
        data = here.cwd / ".smsq"
        redis_url = (data / "redis.url").read_text()
        metrics = {p.name for p in (data / "metrics").iterdir()}
        second = subprocess.run(
            [sys.executable, "-m", "producer", "up"], cwd=here.cwd, env=environment(),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr == (
            f"smsq: already running in .smsq (pid {here.pid}, {here.api_url}); "
            "stop it first or set another SMSQ_DATA_DIR\n"
        )
        assert (data / "redis.url").read_text() == redis_url
        assert metrics <= {p.name for p in (data / "metrics").iterdir()}
        assert httpx.get(f"{here.api_url}/readyz", timeout=10).status_code == 200
        assert smsq("status").exit_code == 0

        elsewhere = here.cwd / "elsewhere"
        elsewhere.mkdir()
        port = here.api_url.rsplit(":", 1)[1]
        busy = subprocess.run(
            [sys.executable, "-m", "producer", "up", "--port", port], cwd=elsewhere,
            env=environment(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert busy.returncode == 1
        assert busy.stderr.startswith(f"smsq: port {port} (API; choose another with --port)")
        assert busy.stderr.count("\n") == 1
        assert not (elsewhere / ".smsq" / "redis").exists()


class TestSupervision:
    def test_kill_9_of_the_dlr_worker_loses_nothing(self, up: Up) -> None:
        """While messages flow, kill -9 of the receipt worker: it is restarted, every message
        ends final, every receipt arrives, and the API answers throughout."""
        receiver, failures, stop = Receiver(), [], threading.Event()

        def poll_api() -> None:
            while not stop.wait(0.05):
                try:
                    httpx.get(f"{up.api_url}/healthz", timeout=10).raise_for_status()
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

        poller = threading.Thread(target=poll_api)
        poller.start()
        try:
            with serve_app(receiver.app()) as receiver_url, up.http() as http:
                body = {"to": TO, "content": "m", "dlr": True, "dlr-level": 3,
                        "dlr-url": f"{receiver_url}/r"}  # fmt: skip
                ids = [http.post("/sms/send", json=body).json()["id"] for _ in range(20)]
                receiver.wait_for(5, timeout=60)
                (worker,) = up.child("-n dlr@")
                os.kill(worker, signal.SIGKILL)
                ids += [http.post("/sms/send", json=body).json()["id"] for _ in range(80)]

                def arrived() -> set[tuple[str, int]]:
                    got = {(r.json()["id"], r.json()["level"]) for r in receiver.snapshot()}
                    return got if len(got) == 2 * len(ids) else set()

                assert wait_for(arrived, 120, "receipts missing") == {
                    (i, level) for i in ids for level in (1, 2)
                }
                assert all(http.get(f"/sms/{i}").json()["status"] in FINAL for i in ids)
        finally:
            stop.set()
            poller.join(10)
        assert failures == []
        assert "smsq: worker-dlr exited (signal 9); restarting in 1 s" in up.stderr()
        assert len(up.child("-n dlr@")) == 1

    def test_kill_9_of_an_api_process_keeps_the_api_answering(self, up: Up) -> None:
        """The other API process and the listening socket take requests meanwhile."""
        before = up.child("producer.serve")
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: before[0] not in up.children(), 10, "the API process did not die")
        assert httpx.get(f"{up.api_url}/healthz", timeout=30).status_code == 200
        wait_for(
            lambda: len(set(up.child("producer.serve")) - set(before)) == 1,
            30,
            "the API process was not restarted",
        )
        assert re.search(r"smsq: api\d exited \(signal 9\); restarting in 1 s", up.stderr())


class TestMetrics:
    def test_metrics_add_up_every_api_process(self, up: Up) -> None:
        """Requests served by different API processes all count in /metrics."""
        directory = up.cwd / ".smsq" / "metrics"
        start, before = healthz_total(up), healthz_by_process(directory)
        made = 0

        def both_counted() -> bool:
            nonlocal made
            httpx.get(f"{up.api_url}/healthz", timeout=30)  # a new connection each time
            made += 1
            after = healthz_by_process(directory)
            grew = [name for name, n in after.items() if n > before.get(name, 0)]
            return len(grew) >= 2

        wait_for(both_counted, 120, f"one API process took every connection: {before}")
        # A request is counted just after its answer went out: give the last one a moment.
        wait_for(
            lambda: healthz_total(up) - start == made,
            10,
            f"/metrics: {healthz_total(up)} - {start} != {made} requests made; "
            f"by process before: {before}, after: {healthz_by_process(directory)}",
        )


def healthz_total(up: Up) -> float:
    text = httpx.get(f"{up.api_url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "smsq_http_requests_total" and s.labels.get("route") == "/healthz"
    )


def healthz_by_process(directory: Path) -> dict[str, float]:
    """/healthz requests counted by each process (file) of the multiprocess directory."""
    counts: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        metrics: Any = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counts[path.name] = sum(
            s.value
            for metric in metrics
            for s in metric.samples
            if s.name == "smsq_http_requests_total" and s.labels.get("route") == "/healthz"
        )
    return counts


class TestRestart:  # last: it restarts the module's smsq up
    def test_ctrl_c_stops_everything_and_a_restart_prints_the_same_key(self, here: Up) -> None:
        """Ctrl-C exits 0 and leaves no child behind; the next start prints the same key and
        secret (one key in Redis), and with --verbose streams the children's logs."""
        shown = (here.key, here.block()["DLR secret"])
        children = list(here.children())
        assert here.interrupt() == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in children)
        assert not (here.cwd / ".smsq" / "redis.url").exists()
        here.start("--verbose")
        assert (here.key, here.block()["DLR secret"]) == shown
        with here.http() as http:
            assert http.get("/sms/" + "0" * 32).status_code == 404  # the key is accepted
        assert "worker-otp | " in here.stderr()
        keys = smsq("keys", "list")
        assert [line.split()[1] for line in keys.output.splitlines()] == ["smsq-up"]

    def test_keys_rotate_replaces_the_development_key(self, here: Up) -> None:
        """The old key is refused at once, the new one works, the CLI follows it."""
        rotated = smsq("keys", "rotate")
        assert rotated.exit_code == 0, rotated.output
        fresh = rotated.output.split("API key")[1].split()[0]
        with httpx.Client(base_url=here.api_url, timeout=30) as http:
            for key, status in ((here.key, 401), (fresh, 404)):
                headers = {"authorization": f"Bearer {key}"}
                assert http.get("/sms/" + "0" * 32, headers=headers).status_code == status
        assert smsq("send", TO, "after the rotation").exit_code == 0
