"""Bearer API keys: `Authorization: Bearer <key>` on every `/sms/*` and `/otp/*` call."""

from __future__ import annotations

from fastapi import Request

from worker.errors import SmsqError
from worker.keys import ApiKey, KeyStore


class UnauthorizedError(SmsqError):
    """No key, or a key we do not know (401)."""


def authenticate(request: Request, keys: KeyStore) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'")
    key = keys.authenticate(token.strip())
    if key is None:
        raise UnauthorizedError("unknown or revoked API key")
    return key
