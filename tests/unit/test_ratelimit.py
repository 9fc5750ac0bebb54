"""Tests for the shared carrier limits (`worker.ratelimit`), on fakeredis running the Lua."""

from __future__ import annotations

import itertools
import time

import fakeredis
import pytest

from worker.ratelimit import ConcurrencyLimiter, RateLimiter


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


class TestRateLimiter:
    def test_burst_goes_at_once(self, client: fakeredis.FakeRedis) -> None:
        """The first `burst` requests are granted with no wait."""
        limiter = RateLimiter(client, "k", rate=10, burst=3)
        grants = [limiter.acquire(max_wait=0) for _ in range(3)]
        assert all(g.granted and g.wait == 0 for g in grants)

    def test_reserves_evenly_spaced_slots(
        self, client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the burst, each grant waits one interval longer than the one before (Redis's
        clock stands still here, so the spacing is exact whatever the machine's load)."""
        monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
        limiter = RateLimiter(client, "k", rate=100, burst=1)
        waits = [limiter.acquire(max_wait=1.0).wait for _ in range(5)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(waits)]
        assert waits[0] == 0
        assert gaps == pytest.approx([0.01] * 4), gaps

    def test_refuses_beyond_max_wait_without_reserving(self, client: fakeredis.FakeRedis) -> None:
        """A slot further off than `max_wait` is refused, with the wait, and nothing is taken."""
        limiter = RateLimiter(client, "k", rate=10, burst=1)
        assert limiter.acquire(max_wait=0).granted
        refused = limiter.acquire(max_wait=0.05)
        assert not refused.granted
        assert 0.05 < refused.wait <= 0.1
        again = limiter.acquire(max_wait=0.2)  # the refusal did not push the next slot back
        assert again.granted
        assert again.wait <= 0.1

    def test_limit_is_shared_by_key(self, client: fakeredis.FakeRedis) -> None:
        """Two limiters on one key (two worker processes) share one budget; other keys do not."""
        first, second = RateLimiter(client, "k", 1, 1), RateLimiter(client, "k", 1, 1)
        other = RateLimiter(client, "other", 1, 1)
        assert first.acquire(0).granted
        assert not second.acquire(0).granted
        assert other.acquire(0).granted

    def test_slots_free_up_with_time(self, client: fakeredis.FakeRedis) -> None:
        """After one interval, a slot is free again."""
        limiter = RateLimiter(client, "k", rate=50, burst=1)
        assert limiter.acquire(0).granted
        assert not limiter.acquire(0).granted
        time.sleep(0.025)
        assert limiter.acquire(0).granted

    @pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (10, 0)])
    def test_rejects_nonsense(self, client: fakeredis.FakeRedis, rate: float, burst: int) -> None:
        """A rate must be positive and a burst at least 1."""
        with pytest.raises(ValueError, match="rate"):
            RateLimiter(client, "k", rate, burst)


class TestConcurrencyLimiter:
    def test_caps_holders(self, client: fakeredis.FakeRedis) -> None:
        """At most `limit` tokens are out at once; releasing one lets the next in."""
        slots = ConcurrencyLimiter(client, "s", limit=2)
        first, second = slots.acquire(), slots.acquire()
        assert first
        assert second
        assert first != second
        assert slots.acquire() is None
        assert slots.in_use() == 2
        slots.release(first)
        assert slots.acquire() is not None

    def test_leases_run_out(self, client: fakeredis.FakeRedis) -> None:
        """A holder that never releases (a dead worker) loses its slot when the lease ends."""
        slots = ConcurrencyLimiter(client, "s", limit=1, lease=0.05)
        assert slots.acquire() is not None
        assert slots.acquire() is None
        time.sleep(0.06)
        assert slots.acquire() is not None
