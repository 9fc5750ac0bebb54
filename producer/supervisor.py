"""`smsq up`'s children: each in its own session, its output in a log file, restarted when it
dies (after 1 s, doubling to 30 s while it keeps dying), until a crash loop stops everything.

A crash loop is `CRASH_LIMIT` exits of one child within `CRASH_WINDOW` seconds: something is
wrong that restarting will not cure (a bad setting, a full disk), and `smsq up` says so and
exits non-zero. A child that ran `STABLE_AFTER` seconds starts again with the first delay.
On Linux each child also gets SIGTERM if `smsq up` itself dies (even by `kill -9`), so no
worker outlives the lock on the data directory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent() -> None:
    """In a child between fork and exec: SIGTERM when the parent dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class CrashLoopError(RuntimeError):
    """One child kept dying: `CRASH_LIMIT` exits within `CRASH_WINDOW` seconds."""

    def __init__(self, name: str, log: Path) -> None:
        super().__init__(
            f"{name} exited {CRASH_LIMIT} times within {CRASH_WINDOW:.0f} s; "
            f"stopping everything (its log: {log})"
        )
        self.name = name


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child: its name (and log file name), command and inherited descriptors."""

    name: str
    command: list[str]
    pass_fds: tuple[int, ...] = ()


@dataclass
class Child:
    spec: ChildSpec
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    delay: float = FIRST_DELAY
    restart_at: float | None = None  # set while it waits to be started again
    exits: deque[float] = field(default_factory=deque)


def describe_exit(code: int) -> str:
    if code < 0:
        return f"signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Start children, restart the ones that die, stop them all."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        say: Callable[[str], None],
        *,
        first_delay: float = FIRST_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.say = say
        self.first_delay = first_delay
        self.clock = clock
        self.children: dict[str, Child] = {}

    def start(self, spec: ChildSpec) -> None:
        """Start a child for the first time."""
        child = Child(spec, self.log_dir / f"{spec.name}.log", delay=self.first_delay)
        self.children[spec.name] = child
        self._spawn(child)

    def _spawn(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with child.log_path.open("ab") as log:
            child.process = _popen(child.spec, self.env, log)
        child.started_at = self.clock()
        child.restart_at = None

    def poll(self) -> None:
        """Notice children that died and start those whose delay is over; CrashLoopError
        when one died too often."""
        now = self.clock()
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(child)
                continue
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            self._schedule_restart(child, code, now)

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        child.exits.append(now)
        while child.exits and now - child.exits[0] > CRASH_WINDOW:
            child.exits.popleft()
        if len(child.exits) >= CRASH_LIMIT:
            raise CrashLoopError(child.spec.name, child.log_path)
        if now - child.started_at >= STABLE_AFTER:
            child.delay = self.first_delay
        self.say(
            f"smsq: {child.spec.name} exited ({describe_exit(code)}); "
            f"restarting in {child.delay:g} s"
        )
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, MAX_DELAY)

    def pids(self) -> dict[str, int]:
        """The running children's process ids, by name."""
        return {
            name: c.process.pid
            for name, c in self.children.items()
            if c.process is not None and c.process.poll() is None
        }

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to every child, then SIGKILL to those still there after `timeout`."""
        processes = [c.process for c in self.children.values() if c.process is not None]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _popen(spec: ChildSpec, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        spec.command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, pass_fds=spec.pass_fds, preexec_fn=die_with_parent,
    )  # fmt: skip


def rotate_logs(log_dir: Path) -> None:
    """Keep the previous run's logs as `<child>.log.1`; this run starts empty files."""
    if not log_dir.is_dir():
        return
    for path in log_dir.glob("*.log"):
        os.replace(path, path.with_name(path.name + ".1"))
