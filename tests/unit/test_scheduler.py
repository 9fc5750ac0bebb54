"""The scheduler's lock: one scheduler works, a stopped one hands over at once (fakeredis,
the real run loop in a thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import fakeredis
import pytest
from celery import Celery

from worker.queueing import CeleryPublisher
from worker.scheduler import LOCK_KEY, Scheduler


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


def scheduler_on(client: fakeredis.FakeRedis) -> Scheduler:
    return Scheduler(client, CeleryPublisher(Celery("unit", broker="memory://"), client))


def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.01)


def running(scheduler: Scheduler) -> threading.Thread:
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    return thread


def holder(client: fakeredis.FakeRedis) -> str | None:
    value = client.get(LOCK_KEY)
    return value.decode() if isinstance(value, bytes) else value


class TestLock:
    def test_a_stopped_scheduler_gives_its_lock_up(self, client: fakeredis.FakeRedis) -> None:
        """Once its loop ends nobody holds the lock, and a standby leads at its next poll
        (not 10 s later, when the lock would have lapsed)."""
        first, standby = scheduler_on(client), scheduler_on(client)
        thread = running(first)
        try:
            until(lambda: holder(client) == first.token, "the first scheduler never led")
            assert not standby.is_leader()
        finally:
            first.stop()
            thread.join(10)
        assert not thread.is_alive()
        assert holder(client) is None
        assert standby.is_leader()

    def test_stopping_leaves_another_schedulers_lock_alone(
        self, client: fakeredis.FakeRedis
    ) -> None:
        """A scheduler that never led (or whose lock lapsed and was taken) takes nothing
        away when it stops."""
        leader, standby = scheduler_on(client), scheduler_on(client)
        assert leader.is_leader()
        thread = running(standby)
        standby.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert holder(client) == leader.token
