"""`Idempotency-Key`: same key and body within 24 h replays the first reply; another body: 409."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, cast

import orjson
import redis

from worker.errors import ConflictError, ValidationError

TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


def _key(key_id: str, idempotency_key: str) -> str:
    return f"smsq:idem:{key_id}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


class Idempotency:
    """Claim a key before doing the work; remember the reply after."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def run(
        self,
        key_id: str,
        idempotency_key: str | None,
        body: bytes,
        work: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        """The reply of `work()`, run at most once per key and body: without a key it just
        runs; with one, a repeat gets the first reply, and a failure frees the key again."""
        if idempotency_key is None:
            return work()
        replay = self.begin(key_id, idempotency_key, body)
        if replay is not None:
            return replay
        try:
            reply = work()
        except BaseException:
            self.abandon(key_id, idempotency_key)
            raise
        self.finish(key_id, idempotency_key, body, reply)
        return reply

    def begin(self, key_id: str, idempotency_key: str, body: bytes) -> dict[str, Any] | None:
        """None if this request should run; the stored reply if it already ran."""
        if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
            raise ValidationError(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
                field="Idempotency-Key",
            )
        digest = hashlib.sha256(body).hexdigest()
        key = _key(key_id, idempotency_key)
        claim = orjson.dumps({"body": digest, "reply": None})
        if self.redis.set(key, claim, nx=True, ex=TTL_SECONDS):
            return None
        stored = self.redis.get(key)
        if stored is None:  # expired in between: run it
            return None
        record = orjson.loads(stored)
        if record["body"] != digest:
            raise ConflictError("Idempotency-Key was already used with a different body")
        if record["reply"] is None:
            raise ConflictError("a request with this Idempotency-Key is still in progress")
        return cast(dict[str, Any], record["reply"])

    def finish(self, key_id: str, idempotency_key: str, body: bytes, reply: dict[str, Any]) -> None:
        digest = hashlib.sha256(body).hexdigest()
        self.redis.set(
            _key(key_id, idempotency_key),
            orjson.dumps({"body": digest, "reply": reply}),
            ex=TTL_SECONDS,
        )

    def abandon(self, key_id: str, idempotency_key: str) -> None:
        """The request failed (e.g. validation): let the key be used again."""
        self.redis.delete(_key(key_id, idempotency_key))
