"""The Python producer library: smsq from Python without the HTTP API.

Same validation, same store, same queues as the API; it talks to Redis directly, so it needs
the same settings as the API (`SMSQ_REDIS_URL`, `SMSQ_SECRET_KEY`, …). Messages and codes are
recorded under `key_id` (the API key id whose limits and views they belong to).

    with Producer(redis_url="redis://127.0.0.1:6379/0") as producer:
        sent = producer.otp_send("+14155552671", purpose="login")
        producer.otp_verify("123456", id=sent.id).valid
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import redis

from producer.body import parse_model
from producer.otp import (
    DEFAULT_PURPOSE,
    DEFAULT_TEMPLATE,
    OtpDesk,
    OtpSendRequest,
    OtpSent,
    OtpVerifyRequest,
)
from worker.celery_app import create_app as create_celery_app
from worker.otp.challenges import Verdict
from worker.queueing import CeleryPublisher
from worker.settings import Settings, get_settings
from worker.store import Store

LIBRARY_KEY_ID = "library"


class Producer:
    """A connection to smsq's store and queues; thread-safe; close it (or use `with`)."""

    def __init__(
        self,
        redis_url: str | None = None,
        settings: Settings | None = None,
        *,
        key_id: str = LIBRARY_KEY_ID,
    ) -> None:
        settings = settings or get_settings()
        if redis_url is not None:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self.settings = settings
        self.key_id = key_id
        self.redis = redis.Redis.from_url(
            settings.effective_redis_url,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        self.store = Store(self.redis)
        self.celery = create_celery_app(settings)
        self.publisher = CeleryPublisher(self.celery, self.redis)
        self._otp = OtpDesk(settings, self.redis, self.store, self.publisher)

    def close(self) -> None:
        self.celery.close()
        self.redis.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- OTP (docs/otp.md) -----------------------------------------------------------------
    def otp_send(
        self,
        to: str,
        *,
        sender: str | None = None,
        template: str = DEFAULT_TEMPLATE,
        length: int = 6,
        ttl: int = 300,
        purpose: str = DEFAULT_PURPOSE,
        client_ref: str | None = None,
        dlr_url: str | None = None,
        dlr_level: int = 2,
        resend_after: int | None = None,
    ) -> OtpSent:
        """Send a code (as `POST /otp/send`); ValidationError, RateLimitedError or
        OtpUnavailableError when it cannot."""
        body = {
            "to": to, "from": sender, "template": template, "length": length, "ttl": ttl,
            "purpose": purpose, "client_ref": client_ref, "dlr-url": dlr_url,
            "dlr-level": dlr_level, "resend_after": resend_after,
        }  # fmt: skip
        return self._otp.send(parse_model(OtpSendRequest, body), self.key_id)

    def otp_verify(
        self,
        code: str,
        *,
        id: str | None = None,
        to: str | None = None,
        purpose: str = DEFAULT_PURPOSE,
    ) -> Verdict:
        """Check a code by challenge `id`, or by `to` and `purpose` (as `POST /otp/verify`)."""
        body = {"id": id, "to": to, "purpose": purpose, "code": code}
        return self._otp.verify(parse_model(OtpVerifyRequest, body), self.key_id)

    def otp_status(self, challenge_id: str) -> dict[str, Any]:
        """Where a code stands (as `GET /otp/{id}`); NotFoundError for unknown ids."""
        return self._otp.status(challenge_id, self.key_id)
