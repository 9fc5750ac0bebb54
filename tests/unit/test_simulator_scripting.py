"""Tests for the simulator's scripting (`worker.simulator.script`, `/outage`, scenario files)."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.servers import serve_app
from worker.carriers.base import SegmentSubmission
from worker.carriers.sim import SimCarrier
from worker.errors import CarrierRejectedError, CarrierUnavailableError
from worker.simulator import SimulatorConfig, create_simulator_app
from worker.simulator.cli import scenario_config
from worker.simulator.script import PlannedReceipt, Script


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def script(clock: Clock | None = None, seed: int = 1, **config: object) -> Script:
    return Script(SimulatorConfig(**config), random.Random(seed), clock or Clock())  # type: ignore[arg-type]


def segment(n: int, *, to: str = "+4915112345678", receipt_url: str = "") -> SegmentSubmission:
    text = f"hi {n}"
    return SegmentSubmission(
        message_id=f"m{n}", seq=1, total=1, to=to, sender="smsq", udh=b"",
        payload=text.encode("utf-16-be"), data_coding=8, text=text, full_text=text,
        receipt_url=receipt_url, want_receipt=bool(receipt_url),
    )  # fmt: skip


class TestLatency:
    @pytest.mark.parametrize("dist", ["uniform", "exponential", "lognormal"])
    def test_distributions(self, dist: str) -> None:
        """Uniform stays in its band; exponential has the jitter as mean; lognormal its median."""
        s = script(latency_ms=20, jitter_ms=10, latency_dist=dist)
        samples = [s.latency() * 1000 for _ in range(4000)]
        if dist == "uniform":
            assert min(samples) >= 20
            assert max(samples) <= 30
        elif dist == "exponential":
            assert 29 < statistics.mean(samples) < 31
        else:
            assert 19 < statistics.median(samples) < 21
            assert 28 < sorted(samples)[int(0.99 * len(samples))] < 32


class TestOutages:
    def test_windows_count_from_start(self) -> None:
        """Inside a configured window the carrier is down; outside it is up."""
        clock = Clock()
        s = script(clock, outages=((1.0, 2.0),))
        assert not s.is_down()
        clock.now += 1.5
        assert s.is_down()
        clock.now += 1.0
        assert not s.is_down()

    def test_manual_outage(self) -> None:
        """`set_outage(None)` is down until ended; `set_outage(n)` for n seconds."""
        clock = Clock()
        s = script(clock)
        s.set_outage(None)
        clock.now += 3600
        assert s.is_down()
        s.set_outage(0)
        assert not s.is_down()
        s.set_outage(2)
        assert s.is_down()
        clock.now += 2.5
        assert not s.is_down()


class TestThroughput:
    def test_caps_the_rate(self) -> None:
        """At 10/s, calls at the same instant beyond the first two wait (one interval of burst)."""
        clock = Clock()
        s = script(clock, max_rate=10)
        assert s.throttle() is None
        assert s.throttle() is None
        wait = s.throttle()
        assert wait is not None
        assert 0 < wait <= 0.1
        clock.now += 0.1
        assert s.throttle() is None


class TestReceiptPlans:
    def test_default_is_one_receipt_after_the_delay(self) -> None:
        """Without scripting, one receipt of the final state after `receipt_delay`."""
        assert script(receipt_delay=0.3).receipts("UNDELIV", last_part=True) == [
            PlannedReceipt(0.3, "UNDELIV")
        ]

    def test_duplicates_out_of_order_and_jitter(self) -> None:
        """Duplicates repeat the final; out of order adds a late ENROUTE; jitter spreads delays."""
        s = script(receipt_delay=0.1, receipt_jitter=0.2, duplicate_receipts=1.0,
                   out_of_order_receipts=1.0)  # fmt: skip
        first, duplicate, late = s.receipts("DELIVRD", last_part=True)
        assert 0.1 <= first.delay <= 0.3
        assert (duplicate.status, late.status) == ("DELIVRD", "ENROUTE")
        assert first.delay < duplicate.delay < late.delay

    def test_fake_fast(self) -> None:
        """A fake-fast receipt says DELIVRD at once, whatever the real outcome."""
        assert script(fake_fast_receipts=1.0).receipts("UNDELIV", last_part=True) == [
            PlannedReceipt(0.0, "DELIVRD")
        ]

    def test_last_part_only(self) -> None:
        """`receipts_for = "last"` sends nothing for the other parts."""
        s = script(receipts_for="last")
        assert s.receipts("DELIVRD", last_part=False) == []
        assert len(s.receipts("DELIVRD", last_part=True)) == 1


@pytest.fixture
def receipts() -> Iterator[tuple[str, list[dict[str, str]]]]:
    got: list[dict[str, str]] = []

    async def dlr(request: Request) -> Response:
        got.append(orjson.loads(await request.body()))
        return Response(status_code=204)

    with serve_app(Starlette(routes=[Route("/dlr", dlr, methods=["POST"])])) as url:
        yield f"{url}/dlr", got


class TestServed:
    def test_outage_endpoint(self) -> None:
        """`POST /outage` takes the carrier down (503 `outage`) and back up."""
        with serve_app(create_simulator_app()) as url, httpx.Client(timeout=5) as client:
            carrier = SimCarrier(client, url)
            assert client.post(f"{url}/outage", json={"down": True}).json() == {"down": True}
            with pytest.raises(CarrierUnavailableError) as caught:
                carrier.submit(segment(1))
            assert (caught.value.status_code, caught.value.code) == (503, "outage")
            client.post(f"{url}/outage", json={"down": False}).raise_for_status()
            carrier.submit(segment(2))
            assert client.post(f"{url}/outage", json={"up": 1}).status_code == 400

    def test_4xx_and_throughput(self) -> None:
        """`error_rate_4xx` refuses; `max_rate` throttles with an integer Retry-After."""
        with serve_app(create_simulator_app(SimulatorConfig(error_rate_4xx=1.0))) as url:
            with httpx.Client() as client, pytest.raises(CarrierRejectedError) as caught:
                SimCarrier(client, url).submit(segment(1))
            assert caught.value.code == "rejected"
        with serve_app(create_simulator_app(SimulatorConfig(max_rate=1))) as url:
            with httpx.Client() as client:
                carrier = SimCarrier(client, url)
                carrier.submit(segment(1))
                carrier.submit(segment(2))
                with pytest.raises(CarrierUnavailableError) as throttled:
                    carrier.submit(segment(3))
            assert (throttled.value.status_code, throttled.value.retry_after) == (429, 1.0)

    def test_timestamps_and_duplicate_receipts(
        self, receipts: tuple[str, list[dict[str, str]]]
    ) -> None:
        """Stats carry each submission's time; a duplicated receipt arrives twice."""
        url, got = receipts
        config = SimulatorConfig(receipt_delay=0, duplicate_receipts=1.0)
        with serve_app(create_simulator_app(config)) as sim, httpx.Client() as client:
            before = time.time()
            accepted = SimCarrier(client, sim).submit(segment(1, receipt_url=url))
            stats = client.get(f"{sim}/stats").json()
            deadline = time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        (stamp,) = stats["submitted_at"]
        assert before <= stamp <= time.time()
        assert [r["carrier_id"] for r in got] == [accepted.carrier_id] * 2


class TestScenarioFile:
    def test_file_then_flags(self, tmp_path: Path) -> None:
        """The scenario sets the base; a flag that differs from its default wins."""
        path = tmp_path / "scenario.toml"
        path.write_text('max_rate = 20\nerror_rate_5xx = 0.1\noutages = [[5, 10]]\n'
                        'reject_prefixes = ["+999"]\n')  # fmt: skip
        config = scenario_config(path, {"error_rate_5xx": 0.2, "max_rate": 0.0})
        assert config.max_rate == 20
        assert config.error_rate_5xx == 0.2
        assert config.outages == ((5, 10),)
        assert config.reject_prefixes == ("+999",)

    @pytest.mark.parametrize(
        ("text", "complaint"),
        [("nonsense = 1\n", "unknown settings"), ("max_rate = \n", "scenario"),
         ("outages = [[3, 1]]\n", "outages")],
    )  # fmt: skip
    def test_bad_scenarios(self, tmp_path: Path, text: str, complaint: str) -> None:
        """Unknown keys, broken TOML and bad values fail with a reason."""
        path = tmp_path / "scenario.toml"
        path.write_text(text)
        with pytest.raises(ValueError, match=complaint):
            scenario_config(path, {})
