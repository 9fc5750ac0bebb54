"""Routing, the shared rate limit and the circuit breaker with real worker processes.

- Two worker processes share one carrier's 50/s limit: the carrier sees 50/s, not 100/s.
- With the primary carrier down, its breaker opens after a few failures and failover to the
  second carrier of the route delivers every message exactly once; when the primary is back,
  a half-open trial closes the breaker and traffic returns to it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from producer import cli
from tests.integration.carrier_stack import CarrierStack, carrier_stack
from tests.integration.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.servers import serve_app
from worker.settings import get_settings
from worker.simulator import SimulatorConfig, create_simulator_app

pytestmark = pytest.mark.integration

RATE = 50  # messages per second, for both workers together
MESSAGES = 300  # six seconds' worth
BREAKER_FAILURES = 3
COOLDOWN = 2.0
CONCURRENCY = 4


def report(line: str) -> None:
    """The measured figures, for the record (`pytest -s` shows them)."""
    print(f"\n{line}")  # noqa: T201


def sim_stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/stats", timeout=10).json()
    return stats


class TestGlobalRateLimit:
    def test_two_workers_share_one_limit(self, redis_url: str) -> None:
        """Two worker processes, 8 threads each, send 300 messages through a 50/s limit: the
        carrier never sees them faster than the limit (a limit is an upper bound: a loaded
        machine may send slower, never faster), and both processes did part of the work."""
        with serve_app(create_simulator_app(SimulatorConfig(receipt_delay=0.05))) as sim:
            env = {"SMSQ_CARRIER": "sim", "SMSQ_CARRIER_URL": sim,
                   "SMSQ_CARRIER_RATE": str(RATE), "SMSQ_CARRIER_BURST": "1"}  # fmt: skip
            # On an empty Redis: what earlier modules left due (sends, retries) would reach
            # this simulator through these workers too.
            with carrier_stack(redis_url, env, workers=2, concurrency=8) as stack:
                with ThreadPoolExecutor(4) as pool:  # ingest well above the limit
                    ids = list(
                        pool.map(
                            lambda n: stack.send(
                                {"to": f"+49151300{n:05d}", "content": f"rate {n}"}
                            ),
                            range(MESSAGES),
                        )
                    )
                stack.wait_all(ids, {"delivered"}, timeout=60)  # receipts parsed and applied
                per_worker = stack.tasks_per_worker(2)
                stats = sim_stats(sim)
        stamps = sorted(stats["submitted_at"])
        assert stats["duplicates"] == []
        assert len(stamps) == MESSAGES
        # The rate over the middle 80 % (the backlog is there throughout).
        low, high = int(0.1 * MESSAGES), int(0.9 * MESSAGES)
        measured = (high - low) / (stamps[high] - stamps[low])
        overall = (MESSAGES - 1) / (stamps[-1] - stamps[0])
        report(
            f"limit {RATE}/s: measured {measured:.1f}/s (middle 80 %), "
            f"{overall:.1f}/s overall; send tasks per worker {per_worker}"
        )
        # Arrivals may bunch by a scheduling stall (up to ~1 s of the ~5 s measured here).
        assert measured <= 1.2 * RATE
        assert overall <= 1.1 * RATE
        assert len(per_worker) == 2
        assert all(count >= MESSAGES // 10 for count in per_worker.values()), per_worker


@pytest.fixture
def carriers(tmp_path: Path) -> Iterator[tuple[str, FakeTwilio, str, Path]]:
    """A simulator (primary, "sim") and a fake Twilio (secondary) on one route."""
    fake = FakeTwilio()
    with (
        serve_app(create_simulator_app(SimulatorConfig(receipt_delay=0.05))) as sim,
        serve_app(fake.app()) as twilio,
    ):
        path = tmp_path / "carriers.toml"
        path.write_text(f"""
[carriers.sim]
type = "sim"
url = "{sim}"
breaker_failures = {BREAKER_FAILURES}
breaker_cooldown = {COOLDOWN}

[carriers.twilio]
type = "twilio"
url = "{twilio}"
username = "{ACCOUNT_SID}"
password = "{AUTH_TOKEN}"

[[routes]]
carriers = ["sim", "twilio"]
""")
        yield sim, fake, twilio, path


def send_batch(stack: CarrierStack, tag: str, count: int) -> list[str]:
    return [
        stack.send({"to": f"+49151400{n:05d}", "from": "+15005550006", "content": f"{tag} {n}"})
        for n in range(count)
    ]


class TestBreakerAndFailover:
    def test_breaker_opens_failover_delivers_and_recovery_returns(
        self, redis_url: str, carriers: tuple[str, FakeTwilio, str, Path]
    ) -> None:
        """Primary down: a few failures open its breaker, Twilio takes every message exactly once
        and its callbacks deliver them. Primary back: after the cool-down a trial closes the
        breaker and it takes over."""
        sim, fake, _, path = carriers
        httpx.post(f"{sim}/outage", json={"down": True}).raise_for_status()
        env = {"SMSQ_CARRIERS_FILE": str(path)}
        with carrier_stack(redis_url, env, concurrency=CONCURRENCY) as stack:
            down_ids = send_batch(stack, "down", 40)
            # Twilio's signed callbacks correlate: the failed-over messages end delivered.
            down = stack.wait_all(down_ids, {"delivered"}, timeout=30)
            during = sim_stats(sim)
            bodies = Counter(m["body"] for m in fake.snapshot())

            httpx.post(f"{sim}/outage", json={"down": False}).raise_for_status()
            time.sleep(COOLDOWN + 0.2)
            up_ids = send_batch(stack, "up", 20)
            up = stack.wait_all(up_ids, {"delivered"}, timeout=30)
            after = sim_stats(sim)
            after_bodies = Counter(m["body"] for m in fake.snapshot())
        failed_on_primary = during["errors"].get("outage", 0)
        report(
            f"primary down: {failed_on_primary} requests hit it before the breaker opened; "
            f"twilio took {len(bodies)} of 40; after recovery the primary took "
            f"{after['submissions']} of 20, twilio {len(after_bodies) - len(bodies)}"
        )
        assert during["submissions"] == 0
        assert {m["segments"][0]["carrier"] for m in down} == {"twilio"}
        assert bodies == Counter({f"down {n}": 1 for n in range(40)})
        assert BREAKER_FAILURES <= failed_on_primary <= BREAKER_FAILURES + CONCURRENCY
        assert after["duplicates"] == []
        up_on_twilio = len(after_bodies) - len(bodies)
        assert after["submissions"] + up_on_twilio == 20
        assert after["submissions"] >= 20 - CONCURRENCY  # the breaker closed again
        assert all(count == 1 for count in after_bodies.values())
        on_sim = sum(m["segments"][0]["carrier"] == "sim" for m in up)
        assert on_sim == after["submissions"]


class TestCarriersCheck:
    def test_validates_and_probes(
        self,
        redis_url: str,
        carriers: tuple[str, FakeTwilio, str, Path],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`smsq carriers check` probes every carrier: 0 when all answer, 1 when one is down
        or refuses the credentials, 2 for an invalid file."""
        _, _, _, path = carriers
        monkeypatch.setenv("SMSQ_REDIS_URL", redis_url)
        monkeypatch.setenv("SMSQ_CARRIERS_FILE", str(path))
        runner = CliRunner()
        ok = runner.invoke(cli.app, ["carriers", "check"])
        assert ok.exit_code == 0, ok.output
        assert "2 carrier(s), 1 route(s)" in ok.output
        assert "route default: sim → twilio" in ok.output
        assert ok.output.count("reachable (200)") == 2

        broken = tmp_path / "broken.toml"
        broken.write_text(
            path.read_text().replace(AUTH_TOKEN, "wrong").replace("[[routes]]", DEAD + "[[routes]]")
        )
        monkeypatch.setenv("SMSQ_CARRIERS_FILE", str(broken))
        get_settings.cache_clear()
        bad = runner.invoke(cli.app, ["carriers", "check"])
        assert bad.exit_code == 1
        assert "credentials refused (401)" in bad.output
        assert "unreachable (ConnectError)" in bad.output

        (tmp_path / "invalid.toml").write_text("[[routes]]\ncarriers = ['nobody']\n")
        monkeypatch.setenv("SMSQ_CARRIERS_FILE", str(tmp_path / "invalid.toml"))
        get_settings.cache_clear()
        invalid = runner.invoke(cli.app, ["carriers", "check"])
        assert invalid.exit_code == 2
        assert "invalid carrier configuration" in invalid.output


DEAD = """
[carriers.kannel]
type = "kannel"
url = "http://127.0.0.1:9"

"""
