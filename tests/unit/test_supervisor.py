"""`smsq up`'s supervisor on real child processes: restarts with backoff and a one-line log, a
crash loop stops it, output goes to log files, no child outlives a killed supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.logfiles import Follower, last_lines, log_files
from producer.supervisor import (
    CRASH_LIMIT,
    ChildSpec,
    CrashLoopError,
    Supervisor,
    describe_exit,
    rotate_logs,
)

REPO = Path(__file__).resolve().parents[2]
SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def supervisor(tmp_path: Path, said: list[str]) -> Iterator[Supervisor]:
    running = Supervisor(dict(os.environ), tmp_path / "logs", said.append, first_delay=0.05)
    try:
        yield running
    finally:
        running.stop(timeout=5)


class TestRestarts:
    def test_a_killed_child_is_restarted_and_logged(
        self, supervisor: Supervisor, said: list[str]
    ) -> None:
        """kill -9 of a child: one line naming it and the signal, then a new process."""
        supervisor.start(ChildSpec("worker-dlr", SLEEPER))
        first = supervisor.pids()["worker-dlr"]
        os.kill(first, signal.SIGKILL)

        def restarted() -> int | None:
            supervisor.poll()
            pid = supervisor.pids().get("worker-dlr")
            return pid if pid not in (None, first) else None

        wait_for(restarted, "the killed child was not restarted")
        assert said == ["smsq: worker-dlr exited (signal 9); restarting in 0.05 s"]

    def test_a_crash_loop_stops_with_doubling_delays(
        self, supervisor: Supervisor, said: list[str]
    ) -> None:
        """A child that keeps exiting is restarted after 1×, 2×, 4×, 8× the first delay; its
        fifth exit within the window is a crash loop naming it and its log."""
        supervisor.start(ChildSpec("api", [sys.executable, "-c", "raise SystemExit(3)"]))
        with pytest.raises(CrashLoopError) as raised:
            wait_for(lambda: supervisor.poll(), "no crash loop")
        assert said == [
            f"smsq: api exited (exit code 3); restarting in {delay:g} s"
            for delay in (0.05, 0.1, 0.2, 0.4)
        ]
        assert len(said) == CRASH_LIMIT - 1
        assert "api exited 5 times within 60 s" in str(raised.value)
        assert str(supervisor.log_dir / "api.log") in str(raised.value)

    def test_stop_ends_every_child(self, supervisor: Supervisor) -> None:
        """stop() leaves no child running."""
        for name in ("a", "b"):
            supervisor.start(ChildSpec(name, SLEEPER))
        pids = list(supervisor.pids().values())
        supervisor.stop(timeout=5)
        assert not any(alive(pid) for pid in pids)
        assert supervisor.pids() == {}

    @pytest.mark.parametrize(("code", "text"), [(-9, "signal 9"), (1, "exit code 1")])
    def test_exit_descriptions(self, code: int, text: str) -> None:
        assert describe_exit(code) == text


class TestParentDeath:
    def test_children_end_when_the_supervisor_is_killed(self, tmp_path: Path) -> None:
        """kill -9 of the supervising process: its children get SIGTERM, none is orphaned."""
        script = (
            "import os, sys, time\n"
            "from pathlib import Path\n"
            "from producer.supervisor import ChildSpec, Supervisor\n"
            f"s = Supervisor(dict(os.environ), Path({str(tmp_path)!r}), print)\n"
            f"s.start(ChildSpec('sleeper', {SLEEPER!r}))\n"
            "print(s.pids()['sleeper'], flush=True)\n"
            "time.sleep(120)\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        parent = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert alive(child)
            parent.kill()
            parent.wait(10)
            wait_for(lambda: not alive(child), "the child outlived its supervisor")
        finally:
            parent.kill()
            parent.wait(10)
            if parent.stdout is not None:
                parent.stdout.close()


class TestLogFiles:
    def test_output_goes_to_the_childs_log_file(
        self, supervisor: Supervisor, tmp_path: Path
    ) -> None:
        """stdout and stderr of a child land in `<logs>/<name>.log`."""
        code = "import sys; print('out', flush=True); print('err', file=sys.stderr)"
        supervisor.start(ChildSpec("api", [sys.executable, "-c", code]))
        log = tmp_path / "logs" / "api.log"
        wait_for(lambda: "err" in log.read_text(), "nothing logged")
        assert log.read_text().split() == ["out", "err"]

    def test_a_new_run_keeps_the_previous_logs(self, tmp_path: Path) -> None:
        """rotate_logs: `api.log` becomes `api.log.1`, replacing the older one."""
        (tmp_path / "api.log").write_text("run 2\n")
        (tmp_path / "api.log.1").write_text("run 1\n")
        rotate_logs(tmp_path)
        assert not (tmp_path / "api.log").exists()
        assert (tmp_path / "api.log.1").read_text() == "run 2\n"

    def test_follower_sees_new_lines_and_replaced_files(self, tmp_path: Path) -> None:
        """Lines already there are skipped, new complete lines come once, a rotated file is
        read from its start."""
        log = tmp_path / "api.log"
        log.write_text("old\n")
        follower = Follower(tmp_path)
        assert follower.poll() == []
        with log.open("a") as handle:
            handle.write("new\nhalf")
        assert follower.poll() == [("api", "new")]
        with log.open("a") as handle:
            handle.write(" line\n")
        assert follower.poll() == [("api", "half line")]
        rotate_logs(tmp_path)
        log.write_text("next run\n")
        (tmp_path / "worker-dlr.log").write_text("appeared\n")
        assert sorted(follower.poll()) == [("api", "next run"), ("worker-dlr", "appeared")]
        follower.close()

    def test_log_files_and_last_lines(self, tmp_path: Path) -> None:
        """One child's log or all; an unknown child is an error naming the known ones."""
        for name in ("api", "scheduler"):
            (tmp_path / f"{name}.log").write_text("".join(f"{n}\n" for n in range(5)))
        assert [p.name for p in log_files(tmp_path)] == ["api.log", "scheduler.log"]
        assert last_lines(tmp_path / "api.log", 2) == ["3", "4"]
        assert len(last_lines(tmp_path / "api.log", -1)) == 5
        with pytest.raises(FileNotFoundError, match="children: api, scheduler"):
            log_files(tmp_path, "worker")
