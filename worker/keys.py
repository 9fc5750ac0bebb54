"""API keys, their scopes and limits, and their receipt-signing secrets, stored in Redis.

A key is `smsq_` + 43 url-safe characters (256 random bits); only its SHA-256 is stored (a
high-entropy token needs no key stretching, as with GitHub tokens). Each key has its own
Standard Webhooks secret(s). `rotate_secret` adds a new secret and gives the ones in use an
end (the overlap window); until then receipts carry one signature per secret, so a receiver
that still holds the old secret keeps verifying while it switches.

Keys:  smsq:key:{key_id}  hash {id, name, created_at, scopes, secrets, revoked, rate, burst,
                                daily, countries, mo_url, otp_optout}; `secrets` is
                                space-separated `whsec_…` tokens, each with `|{expires_at_ms}`
                                once it is being retired; `countries` the key's geo permissions
                                (`US,GB`, `*`; empty: the deployment's, worker.geo); `mo_url`
                                where its inbound messages go by default, `otp_optout` whether
                                its OTP codes go to numbers that opted out (`refuse`, `exempt`;
                                worker.mo, worker.optouts)
       smsq:keyhash:{sha256}  -> key_id
       smsq:keys  set of key ids
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.clock import now_ms
from worker.geo import check_countries
from worker.store.keys import API_KEYS_KEY, api_key_hash_key, api_key_key

ALL_SCOPES = ("send", "otp", "read")
_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
# A key's policy for OTP codes to numbers that opted out (`worker.optouts`).
OTP_OPTOUT_FIELD = "otp_optout"
OTP_OPTOUT_REFUSE = "refuse"
OTP_OPTOUT_EXEMPT = "exempt"
OTP_OPTOUT_POLICIES = (OTP_OPTOUT_REFUSE, OTP_OPTOUT_EXEMPT)
_DURATION = re.compile(r"^\s*([0-9]+)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def parse_rate(text: str) -> float:
    """`10/s`, `600/m`, `5000/h` or a bare number (per second) as requests per second."""
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"a rate looks like 10/s, 600/m or 5000/h, not {text!r}")
    return float(match.group(1)) / _PER[match.group(2) or "s"]


def parse_duration(text: str) -> int:
    """`24h`, `30m`, `7d`, `90s` or bare seconds, as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"a duration looks like 90s, 30m, 24h or 7d, not {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """The scopes, in canonical order; ValueError naming any unknown one."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}")
    return tuple(s for s in ALL_SCOPES if s in scopes)


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """One receipt-signing secret; `expires_at` (ms) is set once a rotation retires it."""

    secret: str
    expires_at: int | None = None

    def is_live(self, now: int) -> bool:
        return self.expires_at is None or now < self.expires_at

    def encode(self) -> str:
        return self.secret if self.expires_at is None else f"{self.secret}|{self.expires_at}"

    @classmethod
    def decode(cls, token: str) -> SigningSecret:
        secret, _, expires = token.partition("|")
        return cls(secret, int(expires) if expires else None)


def decode_secrets(raw: str | None) -> tuple[SigningSecret, ...]:
    return tuple(SigningSecret.decode(t) for t in (raw or "").split())


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the key itself)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    signing: tuple[SigningSecret, ...]
    created_at: int
    revoked: bool = False
    rate: float = 0.0  # requests per second over every call of the key; 0 = unlimited
    burst: int = 0  # requests allowed at once above the rate; 0 = one second's worth
    daily: int = 0  # messages per UTC day; 0 = unlimited
    countries: tuple[str, ...] = ()  # where it may send (`*` = anywhere); () = the deployment's
    mo_url: str = ""  # where its inbound messages go, unless a number of its says otherwise
    otp_optout: str = OTP_OPTOUT_REFUSE  # its OTP codes to numbers that opted out

    @property
    def secrets(self) -> tuple[str, ...]:
        """The signing secrets in force now (expired ones dropped), newest first."""
        now = now_ms()
        return tuple(s.secret for s in self.signing if s.is_live(now))

    @property
    def limited(self) -> bool:
        return self.rate > 0 or self.daily > 0

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """What `create` returns: the key in clear (shown once) and its first signing secret."""

    key: ApiKey
    api_key: str
    webhook_secret: str


class KeyStore:
    """Create, look up, list, revoke API keys; rotate their signing secrets."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(
        self,
        name: str,
        scopes: Sequence[str] = ALL_SCOPES,
        *,
        rate: float = 0.0,
        burst: int = 0,
        daily: int = 0,
        countries: Sequence[str] = (),
        mo_url: str = "",
        otp_optout: str = OTP_OPTOUT_REFUSE,
    ) -> CreatedKey:
        """A new key; ValueError for unknown scopes or countries, negative limits or an
        unknown OTP opt-out policy (`mo_url` is checked by the caller: `worker.ssrf`)."""
        if rate < 0 or burst < 0 or daily < 0:
            raise ValueError("rate, burst and daily must be >= 0")
        check_otp_optout(otp_optout)
        checked = check_scopes(scopes)
        regions = check_countries(countries)
        key_id = secrets.token_hex(8)
        api_key = "smsq_" + secrets.token_urlsafe(32)
        secret = new_webhook_secret()
        record = ApiKey(
            key_id, name, checked, (SigningSecret(secret),), now_ms(),
            rate=rate, burst=burst, daily=daily, countries=regions, mo_url=mo_url,
            otp_optout=otp_optout,
        )  # fmt: skip
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            api_key_key(key_id),
            mapping={
                "id": key_id,
                "name": name,
                "scopes": ",".join(checked),
                "secrets": secret,
                "created_at": str(record.created_at),
                "revoked": "0",
                "rate": repr(rate),
                "burst": str(burst),
                "daily": str(daily),
                "countries": ",".join(regions),
                "mo_url": mo_url,
                OTP_OPTOUT_FIELD: otp_optout,
            },
        )
        pipe.set(api_key_hash_key(key_hash(api_key)), key_id)
        pipe.sadd(API_KEYS_KEY, key_id)
        pipe.execute()
        return CreatedKey(record, api_key, secret)

    def get(self, key_id: str) -> ApiKey | None:
        data = cast(dict[str, str], self.redis.hgetall(api_key_key(key_id)))
        if not data:
            return None
        return ApiKey(
            id=data["id"],
            name=data.get("name", ""),
            scopes=tuple(s for s in data.get("scopes", "").split(",") if s),
            signing=decode_secrets(data.get("secrets")),
            created_at=int(data.get("created_at") or 0),
            revoked=data.get("revoked") == "1",
            rate=float(data.get("rate") or 0),
            burst=int(data.get("burst") or 0),
            daily=int(data.get("daily") or 0),
            countries=tuple(c for c in data.get("countries", "").split(",") if c),
            mo_url=data.get("mo_url", ""),
            otp_optout=data.get(OTP_OPTOUT_FIELD) or OTP_OPTOUT_REFUSE,
        )

    def authenticate(self, api_key: str) -> ApiKey | None:
        """The live key record for a presented key, or None."""
        key_id = cast(str | None, self.redis.get(api_key_hash_key(key_hash(api_key))))
        if not key_id:
            return None
        record = self.get(key_id)
        return record if record and not record.revoked else None

    def list(self) -> list[ApiKey]:
        ids = sorted(cast(set[str], self.redis.smembers(API_KEYS_KEY)))
        return [k for k in (self.get(i) for i in ids) if k is not None]

    def revoke(self, key_id: str) -> bool:
        """Refuse the key from now on (receipts of its messages stay signed)."""
        if not self.redis.exists(api_key_key(key_id)):
            return False
        self.redis.hset(api_key_key(key_id), "revoked", "1")
        return True

    def set_limits(
        self, key_id: str, *, rate: float | None = None, burst: int | None = None,
        daily: int | None = None,
    ) -> bool:  # fmt: skip
        """Change a key's limits (None leaves one as it is); False if there is no such key."""
        values = {"rate": rate, "burst": burst, "daily": daily}
        if any(v is not None and v < 0 for v in values.values()):
            raise ValueError("rate, burst and daily must be >= 0")
        if not self.redis.exists(api_key_key(key_id)):
            return False
        changed: dict[Any, Any] = {
            k: repr(v) if k == "rate" else str(v) for k, v in values.items() if v is not None
        }
        if changed:
            self.redis.hset(api_key_key(key_id), mapping=changed)
        return True

    def set_countries(self, key_id: str, countries: Sequence[str]) -> bool:
        """Replace a key's geo permissions (empty: back to the deployment's); ValueError for
        unknown countries, False if there is no such key."""
        regions = check_countries(countries)
        if not self.redis.exists(api_key_key(key_id)):
            return False
        self.redis.hset(api_key_key(key_id), "countries", ",".join(regions))
        return True

    def set_inbound(
        self, key_id: str, *, mo_url: str | None = None, otp_optout: str | None = None
    ) -> bool:
        """Change where a key's inbound messages go (`""`: nowhere) or its OTP opt-out policy
        (None leaves one as it is); False if there is no such key."""
        if otp_optout is not None:
            check_otp_optout(otp_optout)
        if not self.redis.exists(api_key_key(key_id)):
            return False
        changed: dict[Any, Any] = {"mo_url": mo_url, OTP_OPTOUT_FIELD: otp_optout}
        changed = {k: v for k, v in changed.items() if v is not None}
        if changed:
            self.redis.hset(api_key_key(key_id), mapping=changed)
        return True

    def rotate_secret(self, key_id: str, overlap_seconds: int) -> str | None:
        """Add a new signing secret; the ones in use stop signing `overlap_seconds` from now
        (or sooner, if an earlier rotation already set them an end). Returns the new secret,
        or None if there is no such key."""
        if overlap_seconds < 0:
            raise ValueError("overlap must be >= 0")
        fresh = new_webhook_secret()
        key = api_key_key(key_id)
        found: list[bool] = []

        def rotate(pipe: redis.client.Pipeline) -> None:
            found.clear()
            if not pipe.exists(key):
                return
            now = now_ms()
            ends = now + overlap_seconds * 1000
            kept = [
                SigningSecret(s.secret, ends if s.expires_at is None else min(s.expires_at, ends))
                for s in decode_secrets(cast(str | None, pipe.hget(key, "secrets")))
                if s.is_live(now) and overlap_seconds > 0
            ]
            tokens = " ".join(s.encode() for s in (SigningSecret(fresh), *kept))
            pipe.multi()
            pipe.hset(key, "secrets", tokens)
            found.append(True)

        self.redis.transaction(rotate, key)
        return fresh if found else None

    def signing_secrets(self, key_id: str) -> tuple[str, ...]:
        """The secrets that sign a receipt now, newest first (retired ones dropped)."""
        raw = cast(str | None, self.redis.hget(api_key_key(key_id), "secrets"))
        now = now_ms()
        return tuple(s.secret for s in decode_secrets(raw) if s.is_live(now))


def check_otp_optout(policy: str) -> str:
    """An OTP opt-out policy (`refuse`, `exempt`); ValueError otherwise."""
    if policy not in OTP_OPTOUT_POLICIES:
        raise ValueError(f"the OTP opt-out policy is refuse or exempt, not {policy!r}")
    return policy


def burst_of(key: ApiKey) -> int:
    """Requests a key may make at once: its burst, or one second's worth of its rate."""
    return key.burst or max(1, math.ceil(key.rate))
