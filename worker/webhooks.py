"""Standard Webhooks v1 signing (HMAC-SHA256, `whsec_` secrets) for outgoing receipts.

What is signed is `f"{msg_id}.{timestamp}."` followed by the exact bytes that identify the
receipt on the wire:

- POST: the JSON request body, byte for byte.
- GET: there is no body, so the "body" is the exact query string sent, without the leading
  `?` and including any query the client's URL already had (for `https://h/dlr?t=1` that is
  `t=1&id=…&status=…`). A receiver verifies it with any Standard Webhooks library by passing
  the raw query string as the payload, e.g. `Webhook(secret).verify(query, headers,
  json_parse=False)` with the reference `standardwebhooks` package.

Several secrets sign at once during rotation: the header then carries one `v1,…` signature per
secret, separated by spaces, and a receiver holding either secret accepts the receipt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from secrets import token_bytes

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24-64 random bytes


def generate_secret() -> str:
    """A new endpoint secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be `whsec_` + base64") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one space-separated `v1,<base64>` per secret."""
    if isinstance(secrets, str):
        # A bare str is a Sequence[str] too; signing with each character would be nonsense.
        raise TypeError("secrets must be a sequence of secrets, not one string")
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    if "." in msg_id or not msg_id:
        # The id is a field separator in the signed content; the spec forbids dots in it.
        raise ValueError("msg_id must be non-empty and contain no '.'")
    content = f"{msg_id}.{int(timestamp)}.".encode() + body
    signatures = []
    for secret in secrets:
        digest = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode("ascii"))
    return " ".join(signatures)


def signature_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
    }
