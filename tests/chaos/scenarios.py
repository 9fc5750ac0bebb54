"""The chaos scenarios (docs/reliability.md §9): each submits `n` messages and breaks something.

A third of the messages ask for level-1 receipts, a third level 2, a third both; some are
OTP-lane, some multipart. `run` builds the system, plays the scenario, waits until every
message is final and every requested receipt taken, and counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.counts import ChaosResult
from tests.chaos.system import ChaosSystem, Layout

# The kill -9 scenarios send as batch ingest does: normal-lane ids in chunks (`sms.send_many`),
# OTP ids alone (`sms.send`), so both kinds of send task die mid-way.
BATCH_CHUNK = 16
LONG = "Your verification code is {i:06d}. It expires in 10 minutes. " * 3  # 2 segments


def bodies(
    n: int, receipt_url: str, *, multipart_every: int = 10, send_at: str | None = None
) -> list[dict[str, Any]]:
    """`n` send requests: receipt levels 1, 2, 3 in turn, every 4th on the OTP lane."""
    result = []
    for i in range(n):
        text = LONG if multipart_every and i % multipart_every == 0 else "Your code is {i:06d}"
        body: dict[str, Any] = {
            "to": f"+1415555{i % 10_000:04d}",
            "content": text.format(i=i),
            "dlr": True,
            "dlr-level": 1 + i % 3,
            "dlr-url": receipt_url,
            "priority": "otp" if i % 4 == 0 else "normal",
        }
        if send_at is not None:
            body["send_at"] = send_at
        result.append(body)
    return result


def kill_worker(system: ChaosSystem, n: int) -> None:
    """SIGKILL a send worker a third of the way in (compose restarts it); one publish in 50
    is lost outright (stored, never queued)."""
    system.submit(bodies(n, system.receipt_url), lose_every=50, per_task=BATCH_CHUNK)
    system.wait_progress(0.3)
    system.send_workers[0].kill()
    system.send_workers[0].start()


def kill_pool_child(system: ChaosSystem, n: int) -> None:
    """SIGKILL a prefork pool child (the OOM killer's way) at 25 % and another at 60 %."""
    system.submit(bodies(n, system.receipt_url), per_task=BATCH_CHUNK)
    for share in (0.25, 0.6):
        system.wait_progress(share)
        children = system.send_workers[0].children()
        assert children, "the prefork worker has no pool children"
        _kill(children[0])


def restart_redis(system: ChaosSystem, n: int) -> None:
    """SIGKILL Redis a third of the way in and start it again on its AOF a second later.

    A task a worker popped (BRPOP) in the instant Redis died is lost before kombu records the
    delivery. Send and receipt tasks are recovered from the store, carrier receipts from the
    inbox (`worker.inbound.accept_request`)."""
    system.submit(bodies(n, system.receipt_url))
    system.wait_progress(0.3)
    system.redis_server.kill()
    time.sleep(1.0)
    system.redis_server.start()


def carrier_outage(system: ChaosSystem, n: int) -> None:
    """The carrier answers 503 to everything for 4 seconds, then recovers."""
    system.submit(bodies(n, system.receipt_url))
    system.wait_progress(0.2)
    httpx.post(f"{system.sim_url}/outage", json={"seconds": 4}, timeout=10).raise_for_status()


def receipt_outage(system: ChaosSystem, n: int) -> None:
    """The client's dlr-url answers 500 for 1.5 s, then is down (refused) for 1.5 s."""
    system.submit(bodies(n, system.receipt_url))
    system.wait_progress(0.2)
    system.receiver.answer = lambda: 500
    time.sleep(1.5)
    system.receiver_server.stop()
    system.receiver.answer = lambda: 200
    time.sleep(1.5)
    system.receiver_server.start()


def messy_receipts(system: ChaosSystem, n: int) -> None:
    """Carrier receipts come twice and out of order (set in the layout); a tenth undelivered."""
    system.submit(bodies(n, system.receipt_url, multipart_every=3))


def scheduled_restart(system: ChaosSystem, n: int) -> None:
    """Messages scheduled a few seconds ahead; before they are due every smsq process and
    Redis are killed; all come back after the due time."""
    due = time.time() + 3.0 + n * 0.0015  # after the submission has surely finished
    send_at = datetime.fromtimestamp(due, tz=UTC).isoformat()
    system.submit(bodies(n, system.receipt_url, send_at=send_at))
    assert system.sim_stats()["submissions"] == 0, "sent before it was due"
    system.kill_smsq()
    system.redis_server.kill()
    time.sleep(max(0.0, due - time.time()) + 1.0)
    system.redis_server.start()
    system.start_smsq()


def _kill(pid: int) -> None:
    import os
    import signal

    os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Scenario:
    name: str
    play: Callable[[ChaosSystem, int], None]
    layout: Layout = field(default_factory=Layout)


MESSY = {
    "duplicate_receipts": 0.5,
    "out_of_order_receipts": 0.5,
    "receipt_jitter": 0.3,
    "undelivered_ratio": 0.1,
}

SCENARIOS = {
    s.name: s
    for s in (
        Scenario("kill -9 worker", kill_worker),
        Scenario("kill -9 pool child", kill_pool_child, Layout(send_workers=1, pool="prefork")),
        Scenario("restart redis", restart_redis),
        Scenario("carrier 503 outage", carrier_outage),
        Scenario("dlr-url 500 / down", receipt_outage),
        Scenario("receipts twice + late", messy_receipts, Layout(sim=MESSY)),
        Scenario("scheduled + restart all", scheduled_restart),
    )
}


@contextmanager
def started(system: ChaosSystem) -> Iterator[ChaosSystem]:
    """The system started, and stopped at the end whatever fails (its start included)."""
    try:
        system.start()
        yield system
    finally:
        system.stop()


def run(scenario: Scenario, n: int, workdir: Path, timeout: float | None = None) -> ChaosResult:
    """Play `scenario` with `n` messages on a fresh system under `workdir`; count."""
    with started(ChaosSystem(workdir, scenario.layout)) as system:
        scenario.play(system, n)
        system.wait_done(timeout or 60 + n / 20)
        return system.result(scenario.name)
