"""Chaos: the whole system as real processes, broken on purpose, then counted exactly.

Each test submits 1,500 messages (2,000 receipts: levels 1, 2 and 3; some multipart; some
on the OTP lane), breaks one thing meanwhile, waits until every message is final and every
requested receipt taken, then counts from the carrier simulator's per-reference log and the
receipt receiver's log (`tests.chaos`). `python -m bench.chaos` runs the same at 20,000.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.counts import ChaosResult, table
from tests.chaos.scenarios import SCENARIOS, run
from tests.chaos.system import Layout
from worker.sending import MAX_SEND_ATTEMPTS

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MESSAGES = 1500


def play(name: str, tmp_path: Path) -> ChaosResult:
    result = run(SCENARIOS[name], MESSAGES, tmp_path)
    assert_exact(result)
    return result


def assert_exact(r: ChaosResult) -> None:
    """Every segment sent exactly once, every message final and right, every receipt taken,
    each message's receipts in order."""
    shown = table([r])
    assert (r.unique, r.missing, r.duplicates) == (r.segments, 0, 0), shown
    assert r.receipts_received == r.receipts_expected, shown
    assert (r.not_final, r.wrong, r.out_of_order, r.lost) == (0, 0, 0, 0), shown


class TestChaos:
    def test_a_killed_worker_loses_nothing_and_sends_nothing_twice(self, tmp_path: Path) -> None:
        """kill -9 of a send worker mid-run (and 1 publish in 50 lost): all sent once."""
        r = play("kill -9 worker", tmp_path)
        assert r.receipt_repeats == 0, table([r])
        assert r.notes["republished_send"] >= MESSAGES // 50, table([r])

    def test_a_killed_pool_child_loses_nothing_and_sends_nothing_twice(
        self, tmp_path: Path
    ) -> None:
        """kill -9 of prefork pool children mid-run: all sent once, all receipts once."""
        r = play("kill -9 pool child", tmp_path)
        assert r.receipt_repeats == 0, table([r])

    def test_a_redis_restart_loses_nothing(self, tmp_path: Path) -> None:
        """kill -9 of Redis mid-run, restarted on its AOF: nothing lost, no SMS twice. A
        receipt the client took in the instant of the crash, before it could be marked sent,
        comes again after its lease (same webhook-id): at most one per receipt-worker thread.
        A task popped in that instant (kombu's pop window) is recovered from the store, or for
        a carrier receipt from the inbox."""
        r = run(SCENARIOS["restart redis"], MESSAGES, tmp_path)
        shown = table([r])
        assert (r.unique, r.missing, r.duplicates) == (r.segments, 0, 0), shown
        assert r.receipts_received == r.receipts_expected, shown
        assert (r.not_final, r.wrong, r.out_of_order, r.lost) == (0, 0, 0, 0), shown
        assert r.receipt_repeats <= Layout().concurrency, shown

    def test_a_carrier_outage_delays_but_loses_nothing(self, tmp_path: Path) -> None:
        """503 for 4 s: everything delivered after recovery, attempts per message bounded."""
        r = play("carrier 503 outage", tmp_path)
        assert r.notes["carrier_refusals"] > 0, table([r])
        assert 1 <= r.notes["max_send_attempts"] <= MAX_SEND_ATTEMPTS, table([r])
        assert r.receipt_repeats == 0, table([r])

    def test_a_receipt_url_outage_delays_but_loses_nothing(self, tmp_path: Path) -> None:
        """The dlr-url answers 500, then is down: every receipt arrives once, in order."""
        r = play("dlr-url 500 / down", tmp_path)
        assert r.notes["receipts_refused_by_client"] > 0, table([r])
        assert r.receipt_repeats == 0, table([r])

    def test_carrier_receipts_twice_and_late_change_nothing(self, tmp_path: Path) -> None:
        """Duplicate and out-of-order carrier receipts: states never go back, no receipt
        to the client twice or contradicting the state."""
        r = play("receipts twice + late", tmp_path)
        assert r.receipt_repeats == 0, table([r])

    def test_a_scheduled_send_survives_a_restart_of_everything(self, tmp_path: Path) -> None:
        """Scheduled, then every process and Redis killed before due: each fires once."""
        r = play("scheduled + restart all", tmp_path)
        assert r.receipt_repeats == 0, table([r])
