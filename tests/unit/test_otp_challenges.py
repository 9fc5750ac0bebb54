"""OTP challenges: the verdict on a check, attempts, single use, expiry, supersession."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from worker.otp.challenges import (
    Challenge,
    ChallengeStore,
    Verification,
    judge,
)
from worker.otp.codes import CodeKeys
from worker.store.keys import otp_active_key, otp_challenge_key

T0 = 1_800_000_000_000
CODE = "482913"
KEYS = CodeKeys("unit-test-server-key")
APPROVE = {"attempts", "status", "approved_at"}  # the fields an approval writes
LOCK = {"attempts", "status"}  # the fields the last wrong check writes


def challenge(**changes: object) -> Challenge:
    fields: dict[str, object] = {
        "id": "c1",
        "key_id": "k1",
        "to": "+14155552671",
        "purpose": "login",
        "mac": KEYS.mac("c1", CODE),
        "message_id": "m1",
        "created_at": T0,
        "expires_at": T0 + 300_000,
    }
    fields.update(changes)
    return Challenge(**fields)  # type: ignore[arg-type]


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> ChallengeStore:
    store = ChallengeStore(client)
    store.create(challenge(), retention_ms=3_600_000)
    return store


class TestJudge:
    @pytest.mark.parametrize(
        ("stored", "code", "now", "expected", "writes"),
        [
            (challenge(), CODE, T0, (True, "approved", 4), APPROVE),
            (challenge(), "000000", T0, (False, "pending", 4), {"attempts"}),
            (challenge(attempts=4), "000000", T0, (False, "max_attempts", 0), LOCK),
            (challenge(attempts=4), CODE, T0, (True, "approved", 0), APPROVE),
            (challenge(attempts=5), CODE, T0, (False, "max_attempts", 0), set()),
            (challenge(status="max_attempts"), CODE, T0, (False, "max_attempts", 0), set()),
            (challenge(), CODE, T0 + 300_000, (False, "expired", 0), set()),
            (challenge(status="superseded"), CODE, T0, (False, "expired", 0), set()),
            (challenge(status="approved"), CODE, T0, (False, "not_found", 0), set()),
            (challenge(key_id="k2"), CODE, T0, (False, "not_found", 0), set()),
            (None, CODE, T0, (False, "not_found", 0), set()),
        ],
        ids=[
            "right", "wrong", "fifth-wrong", "fifth-right", "locked", "locked-status",
            "expired", "superseded", "used", "other-key", "missing",
        ],
    )  # fmt: skip
    def test_verdicts(
        self,
        stored: Challenge | None,
        code: str,
        now: int,
        expected: tuple[bool, str, int],
        writes: set[str],
    ) -> None:
        """Each state and code gives its verdict; only counted checks write anything."""
        verdict, changed = judge(stored, "k1", code, KEYS, now)
        assert (verdict.valid, verdict.status, verdict.attempts_remaining) == expected
        assert set(changed) == writes


class TestVerify:
    def test_wrong_codes_count_down_to_lockout(self, store: ChallengeStore) -> None:
        """Four wrong codes leave one check; the fifth locks the code, even the right one."""
        remaining = [
            store.verify("c1", "k1", "000000", KEYS, T0).attempts_remaining for _ in "1234"
        ]
        assert remaining == [4, 3, 2, 1]
        fifth = store.verify("c1", "k1", "000000", KEYS, T0)
        assert (fifth.status, fifth.attempts_remaining) == (Verification.MAX_ATTEMPTS, 0)
        assert store.verify("c1", "k1", CODE, KEYS, T0).status == Verification.MAX_ATTEMPTS
        loaded = store.load("c1")
        assert loaded is not None
        assert (loaded.status, loaded.attempts) == ("max_attempts", 5)

    def test_a_code_is_single_use(self, store: ChallengeStore) -> None:
        """The right code is approved once; the same code again is not found."""
        first = store.verify("c1", "k1", CODE, KEYS, T0)
        assert (first.valid, first.status) == (True, Verification.APPROVED)
        again = store.verify("c1", "k1", CODE, KEYS, T0)
        assert (again.valid, again.status) == (False, Verification.NOT_FOUND)
        loaded = store.load("c1")
        assert loaded is not None
        assert (loaded.status, loaded.approved_at) == ("approved", T0)

    def test_expiry_is_enforced_at_check_time(self, store: ChallengeStore) -> None:
        """At its expiry instant the right code is refused as expired, and no attempt counts."""
        verdict = store.verify("c1", "k1", CODE, KEYS, T0 + 300_000)
        assert (verdict.valid, verdict.status) == (False, Verification.EXPIRED)
        loaded = store.load("c1")
        assert loaded is not None
        assert loaded.attempts == 0

    def test_concurrent_right_codes_approve_exactly_once(self, store: ChallengeStore) -> None:
        """Many simultaneous checks of the right code: exactly one is valid."""
        results: list[bool] = []
        start = threading.Barrier(8)

        def check() -> None:
            start.wait()
            results.append(store.verify("c1", "k1", CODE, KEYS, T0).valid)

        threads = [threading.Thread(target=check) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * 7 + [True]

    def test_concurrent_wrong_codes_are_all_counted(self, store: ChallengeStore) -> None:
        """Simultaneous wrong guesses cannot slip past the attempt limit."""
        start = threading.Barrier(10)
        statuses: list[str] = []

        def guess(n: int) -> None:
            start.wait()
            statuses.append(store.verify("c1", "k1", f"{n:06d}", KEYS, T0).status)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        loaded = store.load("c1")
        assert loaded is not None
        assert loaded.attempts == 5
        assert statuses.count(Verification.MAX_ATTEMPTS) == 6


class TestCreateAndSupersede:
    def test_create_makes_it_active_and_stores_no_code(
        self, store: ChallengeStore, client: fakeredis.FakeRedis
    ) -> None:
        """The challenge is the active one for (key, purpose, number); only its MAC is kept."""
        assert store.active_id("k1", "login", "+14155552671") == "c1"
        assert CODE not in str(client.hgetall(otp_challenge_key("c1")))
        assert client.pttl(otp_active_key("k1", "login", "+14155552671")) > 0
        assert client.ttl(otp_challenge_key("c1")) > 0

    def test_a_new_challenge_replaces_the_active_one(self, store: ChallengeStore) -> None:
        """Creating another challenge for the same subject returns the one it replaced."""
        replaced = store.create(challenge(id="c2", message_id="m2"), retention_ms=1000)
        assert replaced == "c1"
        assert store.active_id("k1", "login", "+14155552671") == "c2"

    def test_supersede_only_moves_a_pending_challenge(self, store: ChallengeStore) -> None:
        """Superseding returns the SMS to cancel once; an approved challenge stays approved."""
        assert store.supersede("c1") == "m1"
        assert store.supersede("c1") is None
        store.create(challenge(id="c3", mac=KEYS.mac("c3", CODE)), retention_ms=1000)
        assert store.verify("c3", "k1", CODE, KEYS, T0).valid
        assert store.supersede("c3") is None

    def test_swap_message_points_a_pending_challenge_at_its_resend(
        self, store: ChallengeStore
    ) -> None:
        """A resend replaces the message once; a stale or repeated swap is refused."""
        assert not store.swap_message("c1", "m-other", "m2", T0, max_sends=2)
        assert store.swap_message("c1", "m1", "m2", T0, max_sends=2)
        assert not store.swap_message("c1", "m2", "m3", T0, max_sends=2)
        loaded = store.load("c1")
        assert loaded is not None
        assert (loaded.message_id, loaded.sends) == ("m2", 2)

    def test_swap_message_refuses_an_expired_challenge(self, store: ChallengeStore) -> None:
        """No resend once the code has expired."""
        assert not store.swap_message("c1", "m1", "m2", T0 + 300_000, max_sends=2)
