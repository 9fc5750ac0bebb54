"""`smsq up`'s children: one process for otp, SMSQ_LANE_PROCESSES for every other lane (the two
receipt lanes apart), SMSQ_API_PROCESSES API processes on one inherited socket."""

from __future__ import annotations

import pytest

from producer.up import UpOptions, children, lane_workers, runs_simulator, worker_command
from worker.settings import Settings


def names(settings: Settings, options: UpOptions | None = None) -> list[str]:
    return [spec.name for spec in children(settings, options or UpOptions(), api_fd=7)]


class TestLanes:
    def test_one_process_per_lane_by_default(self) -> None:
        """Each lane, the two receipt lanes included, has a worker of its own."""
        assert lane_workers(Settings()) == [
            ("otp", "otp", 1), ("normal", "normal", 1), ("bulk", "bulk", 1), ("dlr", "dlr", 1),
            ("carrier-dlr", "carrier-dlr", 1),
        ]  # fmt: skip

    def test_every_lane_but_otp_scales_with_the_setting(self) -> None:
        """SMSQ_LANE_PROCESSES applies to normal, bulk and both receipt lanes."""
        layout = lane_workers(Settings(lane_processes=3))
        assert [(n, p) for n, _, p in layout] == [
            ("otp", 1), ("normal", 3), ("bulk", 3), ("dlr", 3), ("carrier-dlr", 3),
        ]  # fmt: skip

    def test_the_processes_option_wins_over_the_setting(self) -> None:
        """`smsq up --processes 2` overrides SMSQ_LANE_PROCESSES."""
        assert [p for _, _, p in lane_workers(Settings(lane_processes=3), 2)] == [1, 2, 2, 2, 2]

    def test_each_worker_has_its_own_node_name(self) -> None:
        command = worker_command("normal2", "normal", 32)
        assert command[command.index("-n") + 1] == "normal2@%h"
        assert command[command.index("-Q") + 1] == "normal"


class TestChildren:
    def test_default_layout(self) -> None:
        """Simulator, API, a worker per lane, scheduler: the names of their log files."""
        assert names(Settings(api_processes=1)) == [
            "carrier-sim", "api", "worker-otp", "worker-normal", "worker-bulk", "worker-dlr",
            "worker-carrier-dlr", "scheduler",
        ]  # fmt: skip

    def test_api_processes_share_the_inherited_socket(self) -> None:
        """SMSQ_API_PROCESSES=3: three API children, each passed the listening socket."""
        specs = [s for s in children(Settings(api_processes=3), UpOptions(), 7) if "api" in s.name]
        assert [s.name for s in specs] == ["api1", "api2", "api3"]
        assert all(s.pass_fds == (7,) and s.command[-1] == "7" for s in specs)

    def test_numbered_receipt_workers(self) -> None:
        """Several processes of a lane are numbered: worker-dlr1, worker-dlr2."""
        found = names(Settings(api_processes=1), UpOptions(processes=2))
        assert {"worker-dlr1", "worker-dlr2", "worker-carrier-dlr1", "worker-carrier-dlr2"} <= set(
            found
        )
        assert "worker-otp" in found

    def test_threads_per_worker(self) -> None:
        """--concurrency, else SMSQ_WORKER_CONCURRENCY, sets each worker's threads."""
        for options, settings, threads in [
            (UpOptions(), Settings(worker_concurrency=12), "12"),
            (UpOptions(concurrency=4), Settings(worker_concurrency=12), "4"),
        ]:
            worker = next(s for s in children(settings, options, 7) if s.name == "worker-otp")
            assert worker.command[worker.command.index("-c") + 1] == threads

    def test_the_simulator_runs_only_as_the_carrier(self) -> None:
        """Another carrier URL (or carrier) means no simulator child."""
        assert runs_simulator(Settings(sim_port=9100))
        assert not runs_simulator(Settings(carrier_url="https://carrier.example"))
        assert not runs_simulator(Settings(carrier="kannel"))
        assert "carrier-sim" not in names(Settings(carrier_url="https://carrier.example"))

    def test_the_default_carrier_is_the_simulator_on_its_port(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SMSQ_SIM_PORT moves the default carrier URL with it (what `carriers check` probes);
        SMSQ_CARRIER_URL still wins."""
        monkeypatch.setenv("SMSQ_SIM_PORT", "9100")
        assert Settings().carrier_url == "http://127.0.0.1:9100"
        monkeypatch.setenv("SMSQ_CARRIER_URL", "https://carrier.example")
        assert Settings().carrier_url == "https://carrier.example"
