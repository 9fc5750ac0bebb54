"""Operations end to end: /metrics adds up the worker processes (multiprocess mode), `smsq
status` sees queues, scheduler, workers and carriers, `smsq keys` manages keys and secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from producer import cli
from tests.integration.stack import REPO, Stack, running_stack, stop_process, wait_for
from worker.embedded_redis import free_port
from worker.keys import KeyStore

pytestmark = pytest.mark.integration

TO = "+14155552671"


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics")


@pytest.fixture(scope="module")
def stack(redis_server_url: str, metrics_dir: Path) -> Iterator[Stack]:
    """The system, its worker writing metrics to `metrics_dir` (as under `smsq up`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))  # inherited by the worker
        with running_stack(redis_server_url) as running:
            patch.delenv("PROMETHEUS_MULTIPROC_DIR")
            yield running


@pytest.fixture(scope="module")
def api(stack: Stack, metrics_dir: Path) -> Iterator[str]:
    """An API process of its own in multiprocess mode, as `smsq up` runs it."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")},
        **stack.worker_env,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "uvicorn", "producer.api:create_app", "--factory",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 30, "the API process did not get ready")
        yield url
    finally:
        stop_process(process)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


class TestMetrics:
    def test_api_shows_what_the_worker_process_counted(
        self, stack: Stack, api: str, request: pytest.FixtureRequest
    ) -> None:
        """After an SMS with receipts and an approved OTP, /metrics of the API process shows
        the worker's sends, segments, carrier times and receipts, and its own OTP counts."""
        http = httpx.Client(headers=stack.http.headers, timeout=10)
        request.addfinalizer(http.close)
        body = {"to": TO, "content": "hi", "dlr": True, "dlr-level": 3,
                "dlr-url": f"{stack.receiver_url}/m"}  # fmt: skip
        message = http.post(f"{api}/sms/send", json=body).json()
        otp = http.post(f"{api}/otp/send", json={"to": "+14155550177", "template": "M {code}"})
        assert otp.status_code == 202

        def code() -> str | None:
            texts = [str(m["text"]) for m in stack.sim_stats()["messages"]]
            return next((t.removeprefix("M ") for t in texts if t.startswith("M ")), None)

        verdict = http.post(
            f"{api}/otp/verify", json={"id": otp.json()["id"], "code": wait_for(code, 20, "no")}
        )
        assert verdict.json()["valid"]
        stack.wait_status(message["id"], {"delivered"})
        stack.receiver.wait_for(2)

        def counted() -> dict[Any, float] | None:
            found = samples(api)
            return found if sample(found, "smsq_receipt_attempts_total", result="sent") else None

        found = wait_for(counted, 20, "no receipt attempt counted")
        lane = {"carrier": "sim", "lane": "normal", "state": "accepted"}
        assert sample(found, "smsq_messages_total", **lane) >= 1
        assert sample(found, "smsq_segments_total", **lane) >= 1
        assert sample(found, "smsq_messages_total", carrier="sim", lane="otp", state="accepted")
        assert (
            sample(found, "smsq_carrier_request_seconds_count", carrier="sim", outcome="accepted")
            >= 2
        )
        assert (
            sample(found, "smsq_carrier_receipts_applied_total", carrier="sim", outcome="applied")
            >= 1
        )
        assert sample(found, "smsq_otp_sends_total", outcome="accepted") == 1
        assert sample(found, "smsq_otp_verifications_total", status="approved") == 1
        assert (
            sample(
                found, "smsq_http_requests_total", route="/sms/send", method="POST", status="202"
            )
            == 1
        )
        assert sample(found, "smsq_tasks_total", task="sms.send", state="SUCCESS") >= 2
        assert sample(found, "smsq_scheduler_up") == 1
        assert ("smsq_queue_depth", frozenset({("queue", "bulk")})) in found


class TestStatus:
    def test_status_shows_queues_scheduler_workers_and_carriers(self, stack: Stack) -> None:
        """`smsq status` prints the lanes, a running scheduler, the worker and the carrier."""
        result = CliRunner().invoke(
            cli.app, ["status", "--timeout", "2"], env={"SMSQ_REDIS_URL": stack.redis_url}
        )
        assert result.exit_code == 0, result.output
        lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
        assert "otp=" in lines["queues"]
        assert "running" in lines["scheduler"]
        assert "w0@" in lines["workers"]
        assert "sim: closed" in lines["carriers"]

    def test_status_says_when_redis_is_down(self) -> None:
        """Without Redis it says so and exits 1."""
        port = free_port()
        result = CliRunner().invoke(
            cli.app, ["status"], env={"SMSQ_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        )
        assert result.exit_code == 1
        assert "does not answer" in result.output


class TestKeysCommands:
    def test_create_list_rotate_and_revoke(self, stack: Stack) -> None:
        """`smsq keys` creates a scoped, limited key, lists it, rotates its secret, revokes it."""
        runner, env = CliRunner(), {"SMSQ_REDIS_URL": stack.redis_url}
        created = runner.invoke(
            cli.app,
            ["keys", "create", "reporting", "--scope", "read", "--rate", "600/m", "--daily", "50"],
            env=env,
        )
        assert created.exit_code == 0, created.output
        key_id = created.output.split()[2]
        key = KeyStore(stack.redis).get(key_id)
        assert key is not None
        assert (key.scopes, key.rate, key.daily) == (("read",), 10.0, 50)
        listed = runner.invoke(cli.app, ["keys", "list"], env=env).output
        line = next(line for line in listed.splitlines() if line.startswith(key_id))
        assert "scopes=read" in line
        assert "rate=10/s" in line
        assert "daily=0/50" in line
        rotated = runner.invoke(
            cli.app, ["keys", "rotate-secret", key_id, "--overlap", "1h"], env=env
        )
        assert rotated.exit_code == 0, rotated.output
        assert rotated.output.split()[2] == KeyStore(stack.redis).signing_secrets(key_id)[0]
        assert "secrets=2 (old ends" in runner.invoke(cli.app, ["keys", "list"], env=env).output
        assert runner.invoke(cli.app, ["keys", "revoke", key_id], env=env).exit_code == 0
        assert runner.invoke(cli.app, ["keys", "revoke", "nope"], env=env).exit_code == 1

    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (["keys", "create", "x", "--scope", "admin"], "unknown scope"),
            (["keys", "create", "x", "--rate", "fast"], "rate looks like"),
            (["keys", "rotate-secret", "x", "--overlap", "soon"], "duration looks like"),
        ],
    )
    def test_bad_options_exit_2(self, stack: Stack, args: list[str], says: str) -> None:
        """Unknown scopes, unreadable rates and overlaps are refused with exit code 2."""
        result = CliRunner().invoke(cli.app, args, env={"SMSQ_REDIS_URL": stack.redis_url})
        assert result.exit_code == 2
        assert says in result.output
