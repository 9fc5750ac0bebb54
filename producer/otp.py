"""OTP on the producer side: the request bodies, and sending, checking and reading codes.

Used by the `/otp/*` routes and by the producer library alike. A send validates everything
first, then passes the cooldown and send limits (one atomic step, `worker.otp.policy`), then
stores the challenge (only the code's MAC) and the message (the template, with the code
sealed for the worker), supersedes the previous code for the same (key, number, purpose),
and enqueues the SMS on the `otp` lane. The code itself is returned to nobody.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from producer.schemas import SendRequest
from producer.submission import accept_messages
from producer.validation import build_message, normalize_number
from worker.clock import iso_ms, now_ms
from worker.contract import MessageStatus, Queue
from worker.errors import NotFoundError, ValidationError
from worker.geo import GeoPermissions
from worker.optouts import OptOuts
from worker.otp.challenges import (
    NOT_FOUND,
    Challenge,
    ChallengeStore,
    Verdict,
    Verification,
)
from worker.otp.codes import MAX_LENGTH, MIN_LENGTH, PLACEHOLDER, new_code, render
from worker.otp.content import CHALLENGE_FIELD, CODE_FIELD, code_keys
from worker.otp.policy import SendGate, check_destination, send_limits
from worker.otp.resend import RESEND_OTP
from worker.queueing import CeleryPublisher, schedule_at
from worker.settings import Settings
from worker.store import Message, Store, new_message_id
from worker.store.keys import otp_cooldown_key

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "Your code is {code}"
DEFAULT_PURPOSE = "default"
MAX_TTL_SECONDS = 600  # NIST SP 800-63B: an out-of-band code is invalid after 10 minutes
PURPOSE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
ID_PATTERN = r"^[0-9a-f]{32}$"

_QUEUED = frozenset({MessageStatus.QUEUED, MessageStatus.SCHEDULED})
# What GET /otp/{id} says about a pending code's SMS.
_DELIVERY_WORDS: dict[str, str] = {
    MessageStatus.QUEUED: "queued",
    MessageStatus.SCHEDULED: "queued",
    MessageStatus.SUBMITTING: "sent",
    MessageStatus.ACCEPTED: "sent",
    MessageStatus.DELIVERED: "delivered",
}


class OtpSendRequest(BaseModel):
    """`POST /otp/send`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str = Field(description="Recipient, E.164 (leading + optional)", max_length=32)
    from_: str | None = Field(None, alias="from", description="Sender; default from settings")
    template: str = Field(
        DEFAULT_TEMPLATE, min_length=1, max_length=320, description="Must contain {code}"
    )
    length: int = Field(6, ge=MIN_LENGTH, le=MAX_LENGTH, description="Digits in the code")
    ttl: int = Field(300, ge=1, le=MAX_TTL_SECONDS, description="Seconds the code is valid")
    purpose: str = Field(
        DEFAULT_PURPOSE, pattern=PURPOSE_PATTERN, description="One active code per purpose"
    )
    client_ref: str | None = Field(None, max_length=64, description="Echoed in every receipt")
    dlr_url: str | None = Field(None, alias="dlr-url", description="Where receipts go")
    dlr_level: Literal[1, 2, 3] = Field(2, alias="dlr-level")
    resend_after: int | None = Field(
        None, ge=1, le=MAX_TTL_SECONDS, description="Resend once if not delivered by then"
    )


class OtpVerifyRequest(BaseModel):
    """`POST /otp/verify`: the challenge by `id`, or by `to` (and `purpose`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(None, pattern=ID_PATTERN)
    to: str | None = Field(None, max_length=32)
    purpose: str = Field(DEFAULT_PURPOSE, pattern=PURPOSE_PATTERN)
    code: str = Field(pattern=rf"^[0-9]{{{MIN_LENGTH},{MAX_LENGTH}}}$")


@dataclass(frozen=True, slots=True)
class OtpSent:
    """What a send returns (never the code)."""

    id: str
    to: str
    expires_at: str
    status: str
    message_id: str

    def as_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "valid": verdict.valid,
        "status": str(verdict.status),
        "attempts_remaining": verdict.attempts_remaining,
    }


class OtpDesk:
    """Sends, checks and reports OTP codes; one per process."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        store: Store,
        publisher: CeleryPublisher,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.redis = client
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.challenges = ChallengeStore(client)
        self.gate = SendGate(client)
        self.optouts = OptOuts(client)

    def send(self, body: OtpSendRequest, key_id: str, countries: Sequence[str] = ()) -> OtpSent:
        """Send a new code, superseding the active one for (key, number, purpose); `countries`
        is the key's own geo permissions (empty: the deployment's)."""
        keys = code_keys(self.settings)  # 503 before anything else without a server key
        geo = GeoPermissions.for_key(countries, self.settings)
        message, region = self._build_message(body, key_id, geo)
        # Before the limits: a refused code costs no send. Exempt when the key says so.
        self.optouts.check(key_id, message.to, transactional=True)
        now = self.clock()
        challenge_id = new_message_id()
        self.gate.admit(
            send_limits(self.settings, to=message.to, region=region, key_id=key_id, now=now),
            challenge_id,
            now,
            cooldown_key=otp_cooldown_key(key_id, body.purpose, message.to),
            cooldown_ms=self.settings.otp_cooldown_seconds * 1000,
        )
        code = new_code(body.length)
        expires_at = now + body.ttl * 1000
        message = dataclasses.replace(
            message,
            content=body.template,
            validity_until=expires_at,
            extra={CHALLENGE_FIELD: challenge_id, CODE_FIELD: keys.seal(code, message.id)},
        )
        challenge = Challenge(
            id=challenge_id,
            key_id=key_id,
            to=message.to,
            purpose=body.purpose,
            mac=keys.mac(challenge_id, code),
            message_id=message.id,
            created_at=now,
            expires_at=expires_at,
            max_attempts=self.settings.otp_max_attempts,
            resend_after=body.resend_after or 0,
            client_ref=body.client_ref or "",
        )
        del code
        replaced = self.challenges.create(challenge, self.settings.otp_retention_seconds * 1000)
        if replaced and replaced != challenge_id:
            self._supersede(replaced)
        accept_messages(self.store, self.publisher, [message])
        if body.resend_after:
            due = now + body.resend_after * 1000
            schedule_at(self.redis, due, RESEND_OTP, [challenge_id], Queue.OTP.value)
        log.info(
            "otp sent",
            extra={"challenge_id": challenge_id, "message_id": message.id, "replaced": replaced},
        )
        return OtpSent(challenge_id, message.to, iso_ms(expires_at) or "", "pending", message.id)

    def _build_message(
        self, body: OtpSendRequest, key_id: str, geo: GeoPermissions
    ) -> tuple[Message, str]:
        """The OTP message, validated like any other (text rendered with a stand-in code), and
        the destination's region."""
        to = normalize_number(body.to)
        geo.check(to)  # the key's countries first: a refusal names the country
        region = check_destination(to, self.settings)
        if PLACEHOLDER not in body.template:
            raise ValidationError(
                "template must contain {code}", field="template", code="missing_placeholder"
            )
        if body.resend_after is not None and body.resend_after >= body.ttl:
            raise ValidationError(
                "resend_after must be shorter than ttl", field="resend_after", code="invalid"
            )
        request = SendRequest.model_validate(
            {
                "to": body.to,
                "from": body.from_,
                "content": render(body.template, "0" * body.length),
                "priority": "otp",
                "validity": body.ttl,
                "client_ref": body.client_ref,
                "dlr": body.dlr_url is not None,
                "dlr-url": body.dlr_url,
                "dlr-level": body.dlr_level,
            }
        )
        try:
            message, _ = build_message(request, self.settings, key_id=key_id, otp=True, geo=geo)
        except ValidationError as exc:
            field = "template" if exc.field == "content" else exc.field
            raise ValidationError(exc.message, field=field, code=exc.code) from None
        return message, region

    def _supersede(self, challenge_id: str) -> None:
        """Retire a replaced code; its SMS is cancelled if it has not left yet."""
        message_id = self.challenges.supersede(challenge_id)
        if message_id:
            self.store.transition(
                message_id, _QUEUED, MessageStatus.CANCELLED, reason="otp_superseded"
            )

    def verify(self, body: OtpVerifyRequest, key_id: str) -> Verdict:
        """Check a code (single use, at most `otp_max_attempts` checks, expiry enforced now)."""
        keys = code_keys(self.settings)
        if (body.id is None) == (body.to is None):
            raise ValidationError("give either id or to", field="id", code="invalid")
        challenge_id = body.id or self.challenges.active_id(
            key_id, body.purpose, normalize_number(body.to or "")
        )
        if not challenge_id:
            return NOT_FOUND
        verdict = self.challenges.verify(challenge_id, key_id, body.code, keys, self.clock())
        log.info("otp checked", extra={"challenge_id": challenge_id, "status": verdict.status})
        if verdict.valid and verdict.challenge is not None:
            # An approved code needs no SMS any more: drop one that has not left yet.
            self.store.transition(
                verdict.challenge.message_id, _QUEUED, MessageStatus.CANCELLED,
                reason="otp_approved",
            )  # fmt: skip
        return verdict

    def status(self, challenge_id: str, key_id: str) -> dict[str, Any]:
        """`GET /otp/{id}`: where the code and its SMS stand; never the code."""
        challenge = self.challenges.load(challenge_id) if challenge_id.isalnum() else None
        if challenge is None or challenge.key_id != key_id:
            raise NotFoundError("no such OTP")
        standing = challenge.standing(self.clock())
        message_status = self.store.fields(challenge.message_id).get("status")
        status = str(standing)
        if standing == Verification.PENDING:
            status = _DELIVERY_WORDS.get(message_status or "queued", "undelivered")
        return {
            "id": challenge.id,
            "to": challenge.to,
            "purpose": challenge.purpose,
            "status": status,
            "verification": str(standing),
            "message_id": challenge.message_id,
            "message_status": message_status,
            "sends": challenge.sends,
            "attempts": challenge.attempts,
            "attempts_remaining": challenge.attempts_remaining,
            "created_at": iso_ms(challenge.created_at),
            "expires_at": iso_ms(challenge.expires_at),
            "approved_at": iso_ms(challenge.approved_at),
            "client_ref": challenge.client_ref or None,
        }
