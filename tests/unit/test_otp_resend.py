"""The worker side of OTP: the sender writes the code into the text; the scheduled resend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import fakeredis
import pytest
from celery import Celery

from producer.otp import OtpDesk, OtpSendRequest, OtpVerifyRequest
from worker.carriers.base import Accepted, CarrierReceipt, InboundRequest, SegmentSubmission
from worker.errors import RateLimitedError
from worker.otp.challenges import ChallengeStore
from worker.otp.content import CODE_FIELD, code_keys
from worker.otp.resend import Resender
from worker.queueing import CeleryPublisher
from worker.sending import Sender
from worker.settings import Settings, get_settings
from worker.store import Store

TO = "+14155552671"
SECRET = "unit-test-server-key-0123456789abcdef"
T0 = 1_800_000_000_000


class RecordingPublisher(CeleryPublisher):
    """Records what would be published instead of talking to a broker."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        super().__init__(Celery("unit", broker="memory://"), client)
        self.jobs: list[tuple[str, list[Any], str]] = []

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.jobs.append((task, list(args), queue))

    def publish_many(self, jobs: Sequence[tuple[str, Sequence[Any], str]]) -> None:
        for task, args, queue in jobs:
            self.publish(task, args, queue)

    def publish_later(self, task: str, args: Sequence[Any], queue: str, delay: float) -> None:
        self.jobs.append((task, list(args), queue))


class RecordingCarrier:
    """A carrier that accepts everything and remembers the texts it was given."""

    name = "fake"
    submits_whole_text = False
    honours_client_ref = False
    acknowledges_by_receipt = False

    def __init__(self) -> None:
        self.texts: list[str] = []

    def submit(self, segment: SegmentSubmission) -> Accepted:
        self.texts.append(segment.text)
        return Accepted(carrier_id=f"fake-{len(self.texts)}")

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class World:
    """A store, a publisher, an OTP desk and a resender sharing one fake Redis and clock."""

    def __init__(self, **settings: Any) -> None:
        self.redis = fakeredis.FakeRedis(decode_responses=True)
        self.settings = Settings(**{"secret_key": SECRET, **settings})
        self.store = Store(self.redis)
        self.publisher = RecordingPublisher(self.redis)
        self.clock = Clock()
        self.desk = OtpDesk(self.settings, self.redis, self.store, self.publisher, self.clock)
        self.resender = Resender(self.store, self.publisher, self.settings, self.clock)
        self.challenges = ChallengeStore(self.redis)

    def send(self, **body: Any) -> tuple[str, str]:
        sent = self.desk.send(OtpSendRequest.model_validate({"to": TO, **body}), "k1")
        return sent.id, sent.message_id

    def code(self, message_id: str) -> str:
        sealed = self.store.fields(message_id)[CODE_FIELD]
        return code_keys(self.settings).unseal(sealed, message_id)

    def message_of(self, challenge_id: str) -> str:
        challenge = self.challenges.load(challenge_id)
        assert challenge is not None
        return challenge.message_id


def everything_in(client: fakeredis.FakeRedis) -> str:
    """Every key and value in Redis, as one string to search."""
    readers: dict[str, Callable[[str], object]] = {
        "hash": client.hgetall,
        "list": lambda key: client.lrange(key, 0, -1),
        "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        "set": client.smembers,
        "string": client.get,
    }
    keys = [str(key) for key in client.scan_iter()]
    return "\n".join(f"{key}={readers[str(client.type(key))](key)}" for key in keys)


@pytest.fixture
def world() -> World:
    return World()


class TestSenderHook:
    def test_carrier_gets_the_code_and_the_store_never_does(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The worker unseals the code into the text it submits; Redis still has no code."""
        monkeypatch.setenv("SMSQ_SECRET_KEY", SECRET)
        get_settings.cache_clear()
        _, message_id = world.send(length=10)
        code = world.code(message_id)
        carrier = RecordingCarrier()
        sender = Sender(world.store, carrier, world.publisher, "http://127.0.0.1:1")
        assert sender.send(message_id).status == "accepted"
        assert carrier.texts == [f"Your code is {code}"]
        assert code not in everything_in(world.redis)

    def test_a_worker_with_another_key_fails_the_message(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker whose SMSQ_SECRET_KEY differs sends nothing and fails the message."""
        monkeypatch.setenv("SMSQ_SECRET_KEY", "some-other-key")
        get_settings.cache_clear()
        _, message_id = world.send()
        carrier = RecordingCarrier()
        sender = Sender(world.store, carrier, world.publisher, "http://127.0.0.1:1")
        assert sender.send(message_id).status == "failed"
        assert carrier.texts == []
        assert world.store.fields(message_id)["error_code"] == "otp_unsealable"


class TestScheduledResend:
    def test_resends_the_same_code_when_not_delivered(self, world: World) -> None:
        """No delivered receipt yet: a new SMS with the same code goes on the otp lane."""
        challenge_id, first = world.send(resend_after=30)
        world.store.set_fields(first, {"status": "accepted"})
        world.clock.now += 30_000
        assert world.resender.resend(challenge_id) == "resent"
        second = world.message_of(challenge_id)
        assert second != first
        assert world.code(second) == world.code(first)
        assert world.publisher.jobs[-1] == ("sms.send", [second], "otp")
        fields = world.store.fields(second)
        assert (fields["status"], fields["otp"], fields["priority"]) == ("queued", "1", "otp")
        assert int(fields["validity_until"]) == T0 + 300_000
        assert world.store.fields(first)["status"] == "accepted"  # already left: not touched
        verdict = world.desk.verify(
            OtpVerifyRequest(id=challenge_id, code=world.code(second)), "k1"
        )
        assert verdict.valid

    def test_cancels_the_first_sms_if_it_never_left(self, world: World) -> None:
        """A first SMS still queued at resend time is cancelled, not sent as well."""
        challenge_id, first = world.send(resend_after=30)
        assert world.resender.resend(challenge_id) == "resent"
        assert world.store.fields(first)["status"] == "cancelled"

    def test_no_resend_after_a_delivered_receipt(self, world: World) -> None:
        """A delivered SMS is not sent again."""
        challenge_id, first = world.send(resend_after=30)
        world.store.set_fields(first, {"status": "delivered"})
        jobs = len(world.publisher.jobs)
        assert world.resender.resend(challenge_id) == "delivered"
        assert world.message_of(challenge_id) == first
        assert len(world.publisher.jobs) == jobs

    @pytest.mark.parametrize("outcome", ["approved", "expired", "superseded"])
    def test_no_resend_once_the_code_is_settled(self, world: World, outcome: str) -> None:
        """An approved, expired or superseded code is not resent."""
        challenge_id, first = world.send(resend_after=30, ttl=60)
        if outcome == "approved":
            world.desk.verify(OtpVerifyRequest(id=challenge_id, code=world.code(first)), "k1")
        elif outcome == "expired":
            world.clock.now += 60_000
        else:
            world.clock.now += 31_000
            world.send()
        assert world.resender.resend(challenge_id) == "not_pending"
        assert world.message_of(challenge_id) == first

    def test_resends_only_once(self, world: World) -> None:
        """A second resend job (a scheduler republishing, say) does nothing."""
        challenge_id, _ = world.send(resend_after=30)
        assert world.resender.resend(challenge_id) == "resent"
        assert world.resender.resend(challenge_id) == "already_resent"

    def test_resends_count_in_the_send_limits(self) -> None:
        """A resend uses the number's quota; with none left it is refused and recorded."""
        world = World(otp_limit_number=2, otp_cooldown_seconds=0)
        challenge_id, first = world.send(resend_after=30)
        assert world.resender.resend(challenge_id) == "resent"
        with pytest.raises(RateLimitedError, match="this number"):
            world.send()
        world = World(otp_limit_number=1)
        challenge_id, first = world.send(resend_after=30)
        assert world.resender.resend(challenge_id) == "rate_limited"
        assert world.message_of(challenge_id) == first
        events = [e["event"] for e in world.store.events(first)]
        assert "otp_resend_refused" in events

    def test_unknown_challenge_is_ignored(self, world: World) -> None:
        """A job for a challenge that no longer exists does nothing."""
        assert world.resender.resend("0" * 32) == "unknown"
