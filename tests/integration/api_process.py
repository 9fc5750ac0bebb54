"""The API as `smsq up` and production run it: a separate `python -m producer.server` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from producer.server import api_command
from tests.integration.stack import REPO, stop_process, wait_for
from worker.embedded_redis import free_port


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def processes_command(host: str, port: int, processes: int = 2) -> list[str]:
    """`python -m producer.api --processes N`: what compose's `api` service runs."""
    return [sys.executable, "-m", "producer.api", "--host", host, "--port", str(port),
            "--processes", str(processes)]  # fmt: skip


@contextmanager
def api_process(
    env: dict[str, str], command: Callable[[str, int], list[str]] = api_command
) -> Iterator[str]:
    """Run the API with `env` (SMSQ_* settings) on a free loopback port; yield its URL."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
    full_env |= {**env, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command("127.0.0.1", port), env=full_env, cwd=REPO, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or healthy(url), 60, "the API never started")
        assert process.poll() is None, f"the API exited with {process.returncode}"
        yield url
    finally:
        stop_process(process)
