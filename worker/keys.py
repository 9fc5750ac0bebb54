"""API keys and their receipt-signing secrets, stored in Redis.

A key is `smsq_` + 43 url-safe characters (256 random bits); only its SHA-256 is stored (a
high-entropy token needs no key stretching, as with GitHub tokens). Each key has its own
Standard Webhooks secret(s); during a rotation it has two and receipts carry both signatures.

Keys:  smsq:key:{key_id}  hash {id, name, created_at, scopes, secrets, revoked}
       smsq:keyhash:{sha256}  -> key_id
       smsq:keys  set of key ids
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import cast

import redis

from worker.clock import now_ms

ALL_SCOPES = ("send", "otp", "read")


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the key itself)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    secrets: tuple[str, ...]
    created_at: int
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """What `create` returns: the key in clear (shown once) and its first signing secret."""

    key: ApiKey
    api_key: str
    webhook_secret: str


class KeyStore:
    """Create, look up, list and revoke API keys."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, name: str, scopes: tuple[str, ...] = ALL_SCOPES) -> CreatedKey:
        key_id = secrets.token_hex(8)
        api_key = "smsq_" + secrets.token_urlsafe(32)
        secret = new_webhook_secret()
        record = ApiKey(key_id, name, scopes, (secret,), now_ms())
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            f"smsq:key:{key_id}",
            mapping={
                "id": key_id,
                "name": name,
                "scopes": ",".join(scopes),
                "secrets": secret,
                "created_at": str(record.created_at),
                "revoked": "0",
            },
        )
        pipe.set(f"smsq:keyhash:{key_hash(api_key)}", key_id)
        pipe.sadd("smsq:keys", key_id)
        pipe.execute()
        return CreatedKey(record, api_key, secret)

    def get(self, key_id: str) -> ApiKey | None:
        data = cast(dict[str, str], self.redis.hgetall(f"smsq:key:{key_id}"))
        if not data:
            return None
        return ApiKey(
            id=data["id"],
            name=data.get("name", ""),
            scopes=tuple(s for s in data.get("scopes", "").split(",") if s),
            secrets=tuple(data.get("secrets", "").split()),
            created_at=int(data.get("created_at") or 0),
            revoked=data.get("revoked") == "1",
        )

    def authenticate(self, api_key: str) -> ApiKey | None:
        """The live key record for a presented key, or None."""
        key_id = cast(str | None, self.redis.get(f"smsq:keyhash:{key_hash(api_key)}"))
        if not key_id:
            return None
        record = self.get(key_id)
        return record if record and not record.revoked else None

    def list(self) -> list[ApiKey]:
        ids = sorted(cast(set[str], self.redis.smembers("smsq:keys")))
        return [k for k in (self.get(i) for i in ids) if k is not None]

    def revoke(self, key_id: str) -> bool:
        if not self.redis.exists(f"smsq:key:{key_id}"):
            return False
        self.redis.hset(f"smsq:key:{key_id}", "revoked", "1")
        return True

    def signing_secrets(self, key_id: str) -> tuple[str, ...]:
        raw = cast(str | None, self.redis.hget(f"smsq:key:{key_id}", "secrets"))
        return tuple(raw.split()) if raw else ()
