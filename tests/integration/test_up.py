"""`smsq up` as a newcomer runs it: the README's request gets both receipts, Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest

from tests.integration.stack import REPO, wait_for
from tests.receiver import Receiver
from tests.servers import serve_app
from worker.embedded_redis import free_port

pytestmark = pytest.mark.integration


def readme_send_body() -> dict[str, object]:
    """The JSON body of the README's curl example."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- readme-send-example", 1)[1]
    match = re.search(r"-d '(\{.*?\})'", block, re.S)
    assert match, "the README's curl example is missing"
    body: dict[str, object] = orjson.loads(match.group(1))
    return body


class TestSmsqUp:
    def test_readme_request_gets_both_receipts_and_ctrl_c_stops_everything(
        self, tmp_path: Path
    ) -> None:
        """The README's request yields level-1 and level-2 receipts; SIGINT exits cleanly."""
        api_port, sim_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
        env |= {
            "SMSQ_DATA_DIR": str(tmp_path / ".smsq"),
            "SMSQ_API_PORT": str(api_port),
            "SMSQ_SIM_PORT": str(sim_port),
            "PYTHONPATH": str(REPO),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "producer", "up", "--concurrency", "8"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")))  # type: ignore[union-attr]
        reader.start()
        receiver = Receiver()
        try:
            key_line = wait_for(
                lambda: next((line for line in lines if "API key" in line), None),
                90,
                f"smsq up printed no API key: {lines}",
            )
            api_key = key_line.split()[-1]
            with serve_app(receiver.app()) as receiver_url:
                body = readme_send_body() | {"dlr-url": f"{receiver_url}/"}
                reply = httpx.post(
                    f"http://127.0.0.1:{api_port}/sms/send",
                    json=body,
                    headers={"authorization": f"Bearer {api_key}"},
                )
                assert reply.status_code == 202, reply.text
                received = receiver.wait_for(2, timeout=30)
            receipts = [dict(parse_qsl(r.query)) for r in received]
            assert [(r["level"], r["status"]) for r in receipts] == [
                ("1", "accepted"),
                ("2", "delivered"),
            ]
            assert all(r["id"] == reply.json()["id"] for r in receipts)
            assert (tmp_path / ".smsq" / "redis" / "appendonlydir").is_dir()  # AOF on
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(60)
            reader.join(10)
            if process.stdout is not None:
                process.stdout.close()
        assert code == 0
