"""A worker of the bulk lane alone yields the CPU; one of the OTP lane alone goes first; every
other worker keeps its priority."""

from __future__ import annotations

import pytest

from worker.settings import get_settings
from worker.signals import set_lane_priority


class Recorder:
    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[int] = []
        self.refuse = refuse

    def __call__(self, increment: int) -> int:
        if self.refuse:
            raise PermissionError("not permitted")
        self.calls.append(increment)
        return increment


@pytest.mark.parametrize("queues", ["bulk", ["bulk"], (" bulk ",)])
def test_a_bulk_only_worker_is_niced(queues: object) -> None:
    nice = Recorder()
    assert set_lane_priority(queues, nice) == get_settings().bulk_worker_nice == 10
    assert nice.calls == [10]


@pytest.mark.parametrize("queues", ["otp", ["otp"]])
def test_an_otp_only_worker_goes_first(queues: object) -> None:
    nice = Recorder()
    assert set_lane_priority(queues, nice) == get_settings().otp_worker_nice == -10
    assert nice.calls == [-10]


def test_without_the_right_to_raise_priority_it_stays() -> None:
    assert set_lane_priority(["otp"], Recorder(refuse=True)) == 0


@pytest.mark.parametrize("queues", ["normal", "bulk,normal", ["otp", "bulk"], None, 3])
def test_other_workers_keep_their_priority(queues: object) -> None:
    nice = Recorder()
    assert set_lane_priority(queues, nice) == 0
    assert nice.calls == []


def test_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSQ_BULK_WORKER_NICE", "0")
    monkeypatch.setenv("SMSQ_OTP_WORKER_NICE", "0")
    get_settings.cache_clear()
    try:
        nice = Recorder()
        assert set_lane_priority("bulk", nice) == set_lane_priority("otp", nice) == 0
        assert nice.calls == []
    finally:
        get_settings.cache_clear()
