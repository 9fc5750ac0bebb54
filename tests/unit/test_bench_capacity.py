"""The capacity model's arithmetic (`bench/capacity.py`) on given figures, not timings."""

from __future__ import annotations

import math

from bench.capacity import (
    bottleneck,
    by_kind,
    carried_by_one,
    cores_for,
    kind_of,
    processes_for,
    table,
)
from bench.e2e import Cost

MEASURED = {  # CPU ms per message by role, as bench e2e's throughput scenarios record them
    "uvicorn": 0.8,
    "worker normal1": 0.5,
    "worker normal2": 0.6,
    "worker dlr": 4.0,
    "worker carrier-dlr": 1.2,
    "redis": 0.5,
    "carrier-sim": 2.2,
    "bench.receiver": 0.9,
    "scheduler": 0.05,
    "worker otp": 0.02,
}


class TestKinds:
    def test_roles_map_to_the_process_types_a_deployment_runs(self) -> None:
        assert kind_of("uvicorn") == "api"
        assert kind_of("worker normal1") == kind_of("worker normal2") == "send"
        assert kind_of("worker dlr") == "dlr"
        assert kind_of("worker carrier-dlr") == "carrier-dlr"
        assert kind_of("redis") == "redis"
        assert kind_of("scheduler") == kind_of("worker bulk") == "other"

    def test_the_stand_ins_are_not_counted(self) -> None:
        assert kind_of("carrier-sim") is None
        assert kind_of("bench.receiver") is None
        assert "carrier-sim" not in by_kind(MEASURED)

    def test_send_processes_add_up_to_one_type(self) -> None:
        kinds = by_kind(MEASURED)
        assert math.isclose(kinds["send"], 1.1)
        assert math.isclose(kinds["other"], 0.07)
        assert set(kinds) == {"api", "send", "dlr", "carrier-dlr", "redis", "other"}


class TestArithmetic:
    def test_one_process_carries_its_share_of_a_core(self) -> None:
        assert carried_by_one(1.0, 0.7) == 700
        assert carried_by_one(4.0, 1.0) == 250
        assert carried_by_one(0.0, 0.7) == math.inf

    def test_processes_round_up(self) -> None:
        assert processes_for(10_000, 1.0, 0.7) == 15  # 14.29 process-cores
        assert processes_for(100_000, 4.0, 0.7) == 572  # 571.4

    def test_an_exact_fit_is_not_one_more(self) -> None:
        assert processes_for(7_000, 0.1, 0.1) == 7
        assert processes_for(700, 1.0, 0.7) == 1

    def test_every_type_needs_at_least_one(self) -> None:
        assert processes_for(1, 0.01, 0.7) == 1
        assert processes_for(10_000, 0.0, 0.7) == 1

    def test_cores_add_every_sized_type_and_redis_not_the_fixed_costs(self) -> None:
        kinds = by_kind(MEASURED)  # 0.8 + 1.1 + 4.0 + 1.2 + 0.5 = 7.6 ms
        assert cores_for(kinds, 10_000, 0.7) == 109  # 76 cores / 0.7 = 108.6


class TestBottleneck:
    def test_below_one_primary_more_processes_suffice(self) -> None:
        kinds = {"redis": 0.5}  # one primary at 70 %: 1,400/s
        assert "more processes suffice" in bottleneck(kinds, 1_000, 0.7)
        assert "1,400/s" in bottleneck(kinds, 1_000, 0.7)

    def test_above_one_primary_redis_is_the_ceiling(self) -> None:
        said = bottleneck({"redis": 0.5}, 10_000, 0.7)
        assert "Redis is the ceiling" in said
        assert "8 primaries" in said  # 5 cores / 0.7 = 7.1
        assert "Redis Cluster" in said


class TestTable:
    def test_one_row_per_type_with_counts_per_rate(self) -> None:
        lines = table("a", Cost(MEASURED, 98.0, 154.0), [10_000, 100_000], 0.7)
        rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("|")}
        assert rows["send worker process (normal lane)"].endswith("| 1.10 | 636 | 16 | 158 |")
        assert rows["receipt worker process (`dlr`)"].endswith("| 4.00 | 175 | 58 | 572 |")
        assert rows["Redis cores (one primary executes on one)"].endswith(
            "| 0.50 | 1,400 | 8 | 72 |"
        )
        assert rows["Redis commands"].endswith("| 98.0 | | 980,000/s | 9,800,000/s |")
        assert "154 messages/s" in lines[0]

    def test_names_what_it_leaves_out(self) -> None:
        lines = table("b", Cost(MEASURED, 98.0, 114.0), [10_000], 0.7)
        left_out = next(line for line in lines if line.startswith("Not sized:"))
        assert "carrier-sim 2.20 ms" in left_out
        assert "bench.receiver 0.90 ms" in left_out
        assert "scheduler 0.05 ms" in left_out
        assert "uvicorn" not in left_out
