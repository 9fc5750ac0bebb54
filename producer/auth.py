"""Bearer API keys: `Authorization: Bearer <key>` on every `/sms/*` and `/otp/*` call.

A key carries scopes (`send`: `POST /sms/send`, `/sms/batch`, `DELETE /sms/*`; `read`:
`GET /sms/*`; `otp`: `/otp/*`). No key or an unknown one is 401; a key without the route's
scope is 403.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPBearer

from worker.errors import SmsqError
from worker.keys import ApiKey

# Declares the scheme in the OpenAPI document (`/docs` shows an Authorize button); the key
# itself is checked by `authenticate`, so a missing header is our 401, not FastAPI's 403.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key from `smsq keys create`")


class UnauthorizedError(SmsqError):
    """No key, or a key we do not know (401)."""


class ForbiddenError(SmsqError):
    """A valid key without the scope the route needs (403)."""


def bearer_token(request: Request) -> str:
    """The key presented in `Authorization: Bearer <key>`; 401 without one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'")
    return token.strip()


def check_scope(key: ApiKey, scope: str) -> None:
    if not key.allows(scope):
        raise ForbiddenError(f"this API key lacks the '{scope}' scope")
