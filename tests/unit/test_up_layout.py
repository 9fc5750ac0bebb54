"""`smsq up`'s worker layout: SMSQ_LANE_PROCESSES processes for normal and bulk, one else."""

from __future__ import annotations

from producer.up import lane_workers, worker_command
from worker.settings import Settings


def test_one_process_per_lane_by_default() -> None:
    assert [(n, p) for n, _, p in lane_workers(Settings())] == [
        ("otp", 1), ("normal", 1), ("bulk", 1), ("dlr", 1),
    ]  # fmt: skip


def test_normal_and_bulk_scale_with_the_setting() -> None:
    layout = lane_workers(Settings(lane_processes=3))
    assert [(n, q, p) for n, q, p in layout] == [
        ("otp", "otp", 1), ("normal", "normal", 3), ("bulk", "bulk", 3),
        ("dlr", "dlr,carrier-dlr", 1),
    ]  # fmt: skip


def test_each_worker_has_its_own_node_name() -> None:
    command = worker_command("normal2", "normal", 32)
    assert command[command.index("-n") + 1] == "normal2@%h"
    assert command[command.index("-Q") + 1] == "normal"
