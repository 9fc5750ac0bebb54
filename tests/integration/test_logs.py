"""Logs of a full OTP flow through the real system: JSON lines with message ids, no code, no
full number, no message text, in the worker's log and the API's alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from producer.api import create_app
from tests.integration.stack import ALL_QUEUES, REPO, SECRET_KEY, run_scheduler, stop_process
from tests.integration.stack import wait_for as wait
from tests.receiver import Receiver
from tests.servers import serve_app
from worker.keys import KeyStore
from worker.settings import Settings
from worker.simulator import SimulatorConfig, create_simulator_app

pytestmark = pytest.mark.integration

NUMBER = "+14155550142"
DIGITS = NUMBER.removeprefix("+1")  # what any unmasked form of the number contains
SECRET_WORD = "Quetzalcoatl"  # in a message's text: must never reach a log


@dataclass
class System:
    api_url: str
    sim_url: str
    receiver: Receiver
    receiver_url: str
    http: httpx.Client
    worker_log: Path

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.post(f"{self.api_url}{path}", json=body)
        assert reply.status_code in (200, 202), reply.text
        result: dict[str, Any] = reply.json()
        return result

    def get(self, path: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get(f"{self.api_url}{path}").json()
        return result

    def worker_lines(self) -> list[dict[str, Any]]:
        text = self.worker_log.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def system(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """API, scheduler, simulator, receiver, and one worker logging at INFO into a file."""
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    client.flushdb()
    worker_log = tmp_path_factory.mktemp("logs") / "worker.log"
    with ExitStack() as stack:
        stack.callback(client.close)
        sim_url = stack.enter_context(
            serve_app(create_simulator_app(SimulatorConfig(receipt_delay=0.05)))
        )
        receiver = Receiver()
        receiver_url = stack.enter_context(serve_app(receiver.app()))
        settings = Settings(
            redis_url=redis_server_url, carrier_url=sim_url, secret_key=SECRET_KEY,
            dlr_allow_private=["127.0.0.0/8"],
        )  # fmt: skip
        api_url = stack.enter_context(serve_app(create_app(settings)))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")},
            "SMSQ_REDIS_URL": redis_server_url, "SMSQ_CARRIER_URL": sim_url,
            "SMSQ_PUBLIC_URL": api_url, "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_SECRET_KEY": SECRET_KEY, "PYTHONPATH": str(REPO),
        }  # fmt: skip
        sink = stack.enter_context(worker_log.open("wb"))
        command = [
            sys.executable, "-m", "celery", "-A", "worker.tasks", "worker", "-Q", ALL_QUEUES,
            "-P", "threads", "-c", "8", "-n", "logs@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "INFO",
        ]  # fmt: skip
        worker = subprocess.Popen(
            command, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
        stack.callback(stop_process, worker)
        stack.enter_context(run_scheduler(redis_server_url, settings))
        key = KeyStore(client).create("logs").api_key
        http = httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=10)
        stack.callback(http.close)
        yield System(api_url, sim_url, receiver, receiver_url, http, worker_log)


def code_from_carrier(system: System, marker: str) -> str:
    def find() -> str | None:
        messages = httpx.get(f"{system.sim_url}/stats", timeout=10).json()["messages"]
        texts = [str(m["text"]) for m in messages]
        return next((t.removeprefix(marker).strip() for t in texts if t.startswith(marker)), None)

    code: str = wait(find, 20, f"no SMS starting {marker!r}")
    return code


class TestLogsOfAnOtpFlow:
    def test_json_lines_with_ids_and_nothing_secret(
        self, system: System, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Send a code (receipts by GET, number in the query), check a wrong and the right one,
        send an SMS: the worker's and the API's logs are JSON, each task's lines carry its
        message id, and no line holds the code, the full number or the message text."""
        receipts = f"{system.receiver_url}/dlr"
        sent = system.post("/otp/send", {
            "to": NUMBER, "template": "Login {code}", "dlr-url": receipts, "dlr-level": 3,
        })  # fmt: skip
        code = code_from_carrier(system, "Login")
        wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
        assert not system.post("/otp/verify", {"id": sent["id"], "code": wrong})["valid"]
        assert system.post("/otp/verify", {"to": NUMBER, "code": code})["status"] == "approved"
        sms = system.post("/sms/send", {
            "to": NUMBER, "content": f"Hello {SECRET_WORD}", "dlr": True, "dlr-level": 3,
            "dlr-method": "GET", "dlr-url": receipts,
        })  # fmt: skip
        wait(lambda: len(system.receiver.snapshot()) >= 4, 30, "receipts did not all arrive")

        def done(message_id: str, task: str) -> list[dict[str, Any]]:
            return [
                line for line in system.worker_lines()
                if line.get("event") == "task done" and line.get("task") == task
                and line.get("message_id") == message_id
            ]  # fmt: skip

        def delivered(message_id: str) -> list[dict[str, Any]]:
            return [
                line for line in system.worker_lines()
                if line.get("event") == "receipt sent" and line.get("message_id") == message_id
            ]  # fmt: skip

        for message_id in (sent["message_id"], sms["id"]):
            sends = partial(done, message_id, "sms.send")
            (send_line,) = wait(sends, 20, "no send line")
            assert (send_line["result"], send_line["level"]) == ("accepted", "info")
            posts = partial(delivered, message_id)
            wait(lambda: len(posts()) >= 2, 20, "no receipt lines")  # noqa: B023 - used at once

        worker_text = system.worker_log.read_text()
        api_text = capsys.readouterr().err
        api_lines = [json.loads(line) for line in api_text.splitlines() if line.startswith("{")]
        assert all(isinstance(line, dict) for line in api_lines)
        for text in (worker_text, api_text):
            assert code not in text
            assert DIGITS not in text
            assert SECRET_WORD not in text
            assert "Login" not in text
        # Celery's own lines about a task carry the message id too.
        received = [
            line for line in system.worker_lines()
            if line["logger"] == "celery.app.trace" and line.get("message_id") == sms["id"]
        ]  # fmt: skip
        assert received
