"""The parts a chaos run breaks: processes it can kill, and a receipt receiver it can take down.

Every server listens on a port fixed for the whole run, so a part restarted comes back where
the others (and URLs already handed out, such as receipt URLs) expect it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Child:
    """One child process, its output going to a log file in the run's directory."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._close_log()  # the previous run's, if it died on its own
        self._log = (self.log_dir / f"{self.name}.log").open("ab")
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            self.command, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close_log()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL if it does not end in time."""
        self.terminate()
        self.wait(timeout)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_log()

    def exited(self) -> bool:
        """Started, and ended on its own (not stopped or killed by us)."""
        return (
            self._log is not None and self.process is not None and self.process.poll() is not None
        )

    def children(self) -> list[int]:
        """Pids of this process's direct children (a prefork pool)."""
        if self.process is None:
            return []
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


class Served:
    """An ASGI app under uvicorn in a thread, on a fixed port; can be stopped and restarted."""

    def __init__(self, app: Starlette, port: int) -> None:
        self.app = app
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="error", access_log=False,
            ws="none", lifespan="off", timeout_graceful_shutdown=1,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One receipt request as the client saw it, and what the client answered."""

    message_id: str
    level: int
    seq: int
    status: str
    event_id: str
    answered: int


@dataclass
class Receiver:
    """The client's `dlr-url`: records every receipt and answers `answer()` (200 by default)."""

    answer: Callable[[], int] = lambda: 200
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            body = orjson.loads(await request.body())
            status = self.answer()
            arrival = Arrival(
                body["id"], int(body["level"]), int(body["seq"]), body["status"],
                request.headers.get("webhook-id", ""), status,
            )  # fmt: skip
            with self.lock:
                self.arrivals.append(arrival)
            return Response(b"", status_code=status)

        return Starlette(routes=[Route("/r", receive, methods=["POST"])])

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    def delivered(self) -> int:
        """Receipts the client took (answered 2xx), repeats included."""
        with self.lock:
            return sum(200 <= a.answered < 300 for a in self.arrivals)
