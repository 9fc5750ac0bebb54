"""Tests for the shared circuit breaker (`worker.breaker`), on fakeredis running the Lua."""

from __future__ import annotations

import time

import fakeredis
import pytest

from worker.breaker import BreakerState, CircuitBreaker

COOLDOWN = 0.05


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def breaker(client: fakeredis.FakeRedis) -> CircuitBreaker:
    return CircuitBreaker(client, "b", failures=3, cooldown=COOLDOWN, trial_lease=0.05)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failures):
        breaker.failure()


class TestCircuitBreaker:
    def test_closed_lets_everything_through(self, breaker: CircuitBreaker) -> None:
        """A new breaker is closed and allows requests."""
        permit = breaker.allow()
        assert permit.allowed
        assert not permit.trial
        assert breaker.state() is BreakerState.CLOSED

    def test_opens_after_consecutive_failures(self, breaker: CircuitBreaker) -> None:
        """The Nth consecutive failure opens it; then requests are refused with the cool-down."""
        assert not breaker.failure()
        assert not breaker.failure()
        assert breaker.failure()
        permit = breaker.allow()
        assert not permit.allowed
        assert 0 < permit.wait <= COOLDOWN
        assert breaker.state() is BreakerState.OPEN

    def test_success_resets_the_count(self, breaker: CircuitBreaker) -> None:
        """Failures must be consecutive: a success in between starts the count again."""
        breaker.failure()
        breaker.failure()
        breaker.success()
        breaker.failure()
        breaker.failure()
        assert breaker.allow().allowed

    def test_half_open_allows_one_trial(self, breaker: CircuitBreaker) -> None:
        """After the cool-down exactly one request goes, as the trial."""
        trip(breaker)
        time.sleep(COOLDOWN + 0.01)
        assert breaker.state() is BreakerState.HALF_OPEN
        trial = breaker.allow()
        assert trial.allowed
        assert trial.trial
        assert not breaker.allow().allowed

    def test_trial_success_closes(self, breaker: CircuitBreaker) -> None:
        """A successful trial closes the circuit."""
        trip(breaker)
        time.sleep(COOLDOWN + 0.01)
        breaker.allow()
        breaker.success()
        assert breaker.state() is BreakerState.CLOSED
        assert breaker.allow().allowed

    def test_trial_failure_reopens(self, breaker: CircuitBreaker) -> None:
        """A failed trial opens the circuit for another cool-down at once."""
        trip(breaker)
        time.sleep(COOLDOWN + 0.01)
        breaker.allow()
        assert breaker.failure()
        assert breaker.state() is BreakerState.OPEN
        assert not breaker.allow().allowed

    def test_unused_trial_is_released(self, breaker: CircuitBreaker) -> None:
        """A trial permit given back (the request never left) lets another request try."""
        trip(breaker)
        time.sleep(COOLDOWN + 0.01)
        assert breaker.allow().trial
        breaker.release_trial()
        assert breaker.allow().trial

    def test_state_is_shared(self, client: fakeredis.FakeRedis, breaker: CircuitBreaker) -> None:
        """Another process's breaker on the same key sees the circuit open."""
        trip(breaker)
        other = CircuitBreaker(client, "b", failures=3, cooldown=COOLDOWN)
        assert not other.allow().allowed
