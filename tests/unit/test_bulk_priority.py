"""A worker of the bulk lane alone lowers its CPU priority; every other worker keeps it."""

from __future__ import annotations

import pytest

from worker.settings import get_settings
from worker.signals import lower_bulk_priority


class Recorder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, increment: int) -> int:
        self.calls.append(increment)
        return increment


@pytest.mark.parametrize("queues", ["bulk", ["bulk"], (" bulk ",)])
def test_a_bulk_only_worker_is_niced(queues: object) -> None:
    nice = Recorder()
    assert lower_bulk_priority(queues, nice) == get_settings().bulk_worker_nice == 10
    assert nice.calls == [10]


@pytest.mark.parametrize("queues", ["otp", "normal", "bulk,normal", ["otp", "bulk"], None, 3])
def test_other_workers_keep_their_priority(queues: object) -> None:
    nice = Recorder()
    assert lower_bulk_priority(queues, nice) == 0
    assert nice.calls == []


def test_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSQ_BULK_WORKER_NICE", "0")
    get_settings.cache_clear()
    try:
        nice = Recorder()
        assert lower_bulk_priority("bulk", nice) == 0
        assert nice.calls == []
    finally:
        get_settings.cache_clear()
