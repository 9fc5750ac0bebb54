"""`Idempotency-Key`: same key and body within 24 h replays the first reply; another body: 409."""

from __future__ import annotations

import hashlib
from typing import Any, cast

import orjson
import redis

from worker.errors import ConflictError, ValidationError
from worker.store.keys import idempotency_record_key

TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


def idempotency_key(key_id: str, idempotency_key: str) -> str:
    """The Redis key of an Idempotency-Key record (checked for length first)."""
    if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
        raise ValidationError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters", field="Idempotency-Key"
        )
    return idempotency_record_key(key_id, hashlib.sha256(idempotency_key.encode()).hexdigest())


def replay(stored: str | bytes, digest: str) -> dict[str, Any]:
    """The first reply of a repeated request (`stored` record, this body's `digest`), or a
    ConflictError: another body, or the first request is still running."""
    record = orjson.loads(stored)
    if record["body"] != digest:
        raise ConflictError("Idempotency-Key was already used with a different body")
    if record["reply"] is None:
        raise ConflictError("a request with this Idempotency-Key is still in progress")
    return cast(dict[str, Any], record["reply"])


class Idempotency:
    """Claim a key before doing the work (`begin`); remember the reply after (`finish`), or
    free the key when the work failed (`abandon`). A single send does all three in its one
    round trip instead (`producer.gate`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def begin(self, key_id: str, name: str, body: bytes) -> dict[str, Any] | None:
        """None if this request should run; the stored reply if it already ran."""
        key = idempotency_key(key_id, name)
        digest = hashlib.sha256(body).hexdigest()
        claim = orjson.dumps({"body": digest, "reply": None})
        if self.redis.set(key, claim, nx=True, ex=TTL_SECONDS):
            return None
        stored = self.redis.get(key)
        if stored is None:  # expired in between: run it
            return None
        return replay(stored, digest)

    def finish(self, key_id: str, name: str, body: bytes, reply: dict[str, Any]) -> None:
        digest = hashlib.sha256(body).hexdigest()
        self.redis.set(
            idempotency_key(key_id, name),
            orjson.dumps({"body": digest, "reply": reply}),
            ex=TTL_SECONDS,
        )

    def abandon(self, key_id: str, name: str) -> None:
        """The request failed (e.g. validation): let the key be used again."""
        self.redis.delete(idempotency_key(key_id, name))
