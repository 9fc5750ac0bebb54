"""The scheduled resend: once, if the code is still pending and its SMS was not delivered.

`POST /otp/send` with `resend_after` puts an `otp.resend` job in the durable schedule; when it
is due, the worker resends the same code in a new message (sealed anew for it) on the `otp`
lane, unless the code was approved, expired or superseded meanwhile, or a delivered receipt
came. The resend counts against the send limits (not the cooldown, which guards client calls).
A still-queued earlier SMS is cancelled. Sending through the route's next carrier belongs to
carrier failover and is not done here: the resend takes the worker's carrier.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from worker.clock import now_ms
from worker.contract import SEND_SMS, MessageStatus, Queue
from worker.errors import RateLimitedError, ValidationError
from worker.otp.challenges import ChallengeStore, Verification
from worker.otp.codes import OtpUnavailableError
from worker.otp.content import CHALLENGE_FIELD, CODE_FIELD, code_keys
from worker.otp.policy import SendGate, region_of, send_limits
from worker.queueing import Publisher
from worker.settings import Settings
from worker.store import Message, Store, new_message_id

log = logging.getLogger(__name__)

RESEND_OTP = "otp.resend"  # task name; args: [challenge_id]
MAX_SENDS = 2  # the first SMS and one scheduled resend


class Resender:
    """Performs due scheduled resends; one per worker process (or per task run: it is cheap)."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        settings: Settings,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.settings = settings
        self.clock = clock
        self.challenges = ChallengeStore(store.redis)
        self.gate = SendGate(store.redis)

    def resend(self, challenge_id: str) -> str:
        """Resend if still wanted; returns what happened (`resent` or why not)."""
        now = self.clock()
        challenge = self.challenges.load(challenge_id)
        if challenge is None:
            return "unknown"
        if challenge.standing(now) != Verification.PENDING:
            return "not_pending"
        if challenge.sends >= MAX_SENDS:
            return "already_resent"
        current = self.store.load(challenge.message_id)
        if current is None or CODE_FIELD not in current.extra:
            return "unknown"
        if current.status == MessageStatus.DELIVERED:
            return "delivered"
        limits = send_limits(
            self.settings, to=challenge.to, region=region_of(challenge.to),
            key_id=challenge.key_id, now=now,
        )  # fmt: skip
        try:
            self.gate.admit(limits, f"{challenge.id}:resend", now)
        except RateLimitedError:
            self.store.add_event(current.id, "otp_resend_refused", reason="rate_limited")
            return "rate_limited"
        try:
            fresh = self._copy(current, challenge.id, challenge.expires_at, now)
        except (ValidationError, OtpUnavailableError) as exc:
            reason = exc.code if isinstance(exc, ValidationError) else "otp_unavailable"
            self.store.add_event(current.id, "otp_resend_refused", reason=reason)
            return reason
        if not self.challenges.swap_message(challenge.id, current.id, fresh.id, now, MAX_SENDS):
            return "not_pending"
        self.store.create(fresh, "accepted")
        self.store.add_event(fresh.id, "otp_resend", replaces=current.id)
        self.store.transition(
            current.id,
            {MessageStatus.QUEUED, MessageStatus.SCHEDULED},
            MessageStatus.CANCELLED,
            reason="otp_resent",
        )
        self.publisher.publish(SEND_SMS, [fresh.id], Queue.OTP.value)
        log.info("otp resent", extra={"challenge_id": challenge.id, "message_id": fresh.id})
        return "resent"

    def _copy(self, current: Message, challenge_id: str, expires_at: int, now: int) -> Message:
        """A new message with the same code, sealed for its own id."""
        keys = code_keys(self.settings)
        message_id = new_message_id()
        sealed = keys.seal(keys.unseal(current.extra[CODE_FIELD], current.id), message_id)
        return dataclasses.replace(
            current,
            id=message_id,
            status=MessageStatus.QUEUED,
            created_at=now,
            send_at=None,
            validity_until=expires_at,
            extra={CHALLENGE_FIELD: challenge_id, CODE_FIELD: sealed},
        )
