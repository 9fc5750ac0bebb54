"""The chaos harness itself: whatever fails, a run leaves no process of its own behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.chaos.scenarios import Scenario, run
from tests.chaos.system import ChaosSystem, Layout

pytestmark = pytest.mark.integration


def processes_of(workdir: Path) -> list[str]:
    """Processes that belong to a run under `workdir`: working in it (Redis), its path on
    their command line (the simulator) or their output going to its log files (every smsq
    process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            places = [os.readlink(entry / "cwd"), os.readlink(entry / "fd" / "1")]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(workdir) in command or any(p.startswith(str(workdir)) for p in places):
            found.append(f"{entry.name}: {command[:120]}")
    return found


def never_played(system: ChaosSystem, n: int) -> None:
    raise AssertionError("a run whose start failed must not play")


class TestNoLeaks:
    def test_a_start_that_fails_half_way_leaves_no_process(self, tmp_path: Path) -> None:
        """Redis, the API, the workers and the scheduler are started, the simulator refuses
        its settings: `run` raises, and nothing of the run is left running."""
        broken = Scenario("broken start", never_played, Layout(sim={"no_such": 1}, start_timeout=3))
        try:
            with pytest.raises(RuntimeError, match="did not come up"):
                run(broken, 10, tmp_path)
            assert (tmp_path / "scheduler.log").exists()  # it got that far
            assert processes_of(tmp_path) == []
        finally:
            for line in processes_of(tmp_path):  # a failed test must not leak either
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
