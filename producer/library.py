"""The Python producer library: smsq from Python without the HTTP API.

Same validation, same store, same queues as the API; it talks to Redis directly, so it needs
the same settings as the API. `Producer()` finds them as the CLI does (`producer.instance`):
the running `smsq up` of the data directory (its Redis, server key and receipt allow-list),
unless settings or arguments say otherwise (`SMSQ_REDIS_URL`, `SMSQ_SECRET_KEY`, …); with
neither, NoInstanceError. Messages and codes are recorded under `key_id` (the API key id whose
limits and views they belong to).

    with Producer() as producer:
        sent = producer.otp_send("+14155552671", purpose="login")
        producer.otp_verify("123456", id=sent.id).valid
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from producer.batches import IngestResult
from producer.body import parse_model
from producer.desk import MessageDesk
from producer.instance import client_settings
from producer.otp import (
    DEFAULT_PURPOSE,
    DEFAULT_TEMPLATE,
    OtpDesk,
    OtpSendRequest,
    OtpSent,
    OtpVerifyRequest,
)
from producer.schemas import SendRequest
from worker.celery_app import create_app as create_celery_app
from worker.keys import KeyStore
from worker.otp.challenges import Verdict
from worker.queueing import CeleryPublisher, publishes_directly
from worker.redis_urls import store_client
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
        api_key: str | None = None,
    ) -> None:
        settings = settings or get_settings()
        if redis_url is not None:
            settings = settings.model_copy(update={"redis_url": redis_url})
        settings = client_settings(settings)  # the running smsq up fills what is not given
        self.settings = settings
        self.key_id = key_id
        self.redis = store_client(
            settings,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        self.store = Store(self.redis)
        if api_key is not None:  # act as that key: its limits, its views, its receipt secrets
            key = KeyStore(self.redis).authenticate(api_key)
            if key is None:
                self.redis.close()
                raise ValueError("unknown or revoked API key")
            self.key_id = key.id
        self.celery = create_celery_app(settings)
        self.publisher = CeleryPublisher(
            self.celery, self.redis, direct=publishes_directly(settings)
        )
        self._otp = OtpDesk(settings, self.redis, self.store, self.publisher)
        self._desk = MessageDesk(settings, self.store, self.publisher)

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

    # -- messages and campaigns (same validation as POST /sms/send and /sms/batch) ------------
    def send(self, to: str, content: str, **options: Any) -> str:
        """Send one message; `options` are the API's body fields (`dlr_url` or `"dlr-url"`…).

        Returns the message id; raises ValidationError naming the field when invalid.
        """
        body = parse_model(SendRequest, _api_body({"to": to, "content": content, **options}))
        return str(self._desk.send(body, self.key_id)["id"])

    def schedule(self, to: str, content: str, *, at: datetime | str, **options: Any) -> str:
        """Send at `at` (an aware datetime or ISO 8601 text), through the durable scheduler."""
        send_at = at.isoformat() if isinstance(at, datetime) else at
        return self.send(to, content, send_at=send_at, **options)

    def send_many(
        self, messages: Iterable[Mapping[str, Any]], *, batch_id: str | None = None
    ) -> IngestResult:
        """Send many messages (API body dicts) as one batch, stored and queued in pipelined
        chunks; the result lists the accepted ids and each rejected index with its error."""
        bodies = (_api_body(dict(m)) for m in messages)
        return self._desk.send_many(bodies, self.key_id, batch_id=batch_id)

    def cancel(self, message_id: str) -> bool:
        """Cancel a queued or scheduled message; False once it is being submitted or done."""
        return self._desk.cancel_ids([message_id]) == 1


def _api_body(values: dict[str, Any]) -> dict[str, Any]:
    """Python-style keyword names (`dlr_url`, `sender`) to the API's (`dlr-url`, `from`)."""
    renames = {
        "sender": "from",
        "dlr_level": "dlr-level",
        "dlr_url": "dlr-url",
        "dlr_method": "dlr-method",
        "dlr_batch": "dlr-batch",
    }
    return {renames.get(k, k): v for k, v in values.items() if v is not None}
