"""The benchmark harness works: every e2e scenario runs at a tiny size (figures not asserted)."""

from __future__ import annotations

import pytest

from bench import kannel, smpp
from bench.capacity import table
from bench.e2e import Cost, run
from tests.integration.kannel import KANNEL_MISSING

pytestmark = pytest.mark.integration


class TestE2eHarness:
    def test_every_scenario_reports_its_figures(self) -> None:
        """Scenarios a–e and i all run against a real smsq and print their rows; a–c hand
        over their costs per message, from which `bench capacity` builds its table."""
        costs: dict[str, Cost] = {}
        rows = dict(run(0.002, {"a", "b", "c", "d", "e", "i"}, costs=costs))
        for name in (
            "engine ceiling: no-op Celery tasks/s, 1 worker",
            "a: messages/s end to end",
            "b: receipts/s",
            "c: segments/s",
            "d: OTP accept→submit p99 (ms)",
            "e: Redis bytes per scheduled message (hash + events + schedule)",
            "i: healthy receipt after its event, p50 / p99 / max (ms)",
        ):
            assert name in rows, f"missing {name!r} in {sorted(rows)}"
        assert rows["e: scheduled messages"] == "2,000"
        assert sorted(costs) == ["a", "b", "c"]
        assert {"uvicorn", "worker normal1", "worker dlr", "redis"} <= set(costs["a"].cpu_ms)
        assert costs["a"].redis_commands > 0
        capacity = table("a", costs["a"], [10_000], 0.7)
        assert any(line.startswith("| send worker process (normal lane) |") for line in capacity)


class TestKannelHarness:
    @pytest.mark.skipif(KANNEL_MISSING is not None, reason=KANNEL_MISSING or "")
    def test_reports_kannel_alone_smsq_through_it_and_the_ratio(self) -> None:
        """Both measurements run on one real Kannel at a tiny size (figures not asserted)."""
        rows = dict(kannel.run(20))
        for name in (
            "kannel alone: messages/s (SMSC has all, every DLR back)",
            "smsq via kannel: messages/s (every level-1 + level-2 receipt)",
            "ratio smsq / kannel alone (target ≥ 0.5)",
        ):
            assert name in rows, f"missing {name!r} in {sorted(rows)}"


class TestSmppHarness:
    def test_reports_the_ceiling_and_the_connector(self) -> None:
        """The plain codec loop and the real connector, each with 1 and 2 binds, at a tiny
        size (figures not asserted)."""
        rows = dict(smpp.run(40, 2, 10))
        for binds in (1, 2):
            assert f"ceiling (plain loop, codec), {binds} bind(s): segments/s" in rows
            assert f"smsq smpp, {binds} bind(s): segments/s (answers stored)" in rows
