"""OTP codes: drawn from `secrets`, kept only as a keyed HMAC, and sealed (AES-GCM) until sent.

Two keys are derived from the server key (`SMSQ_SECRET_KEY`) with HKDF-SHA256 and distinct
labels, so the key that checks codes never encrypts anything and vice versa:

- the MAC key: `HMAC-SHA256(mac_key, challenge_id ":" code)` is what verification compares
  (`hmac.compare_digest`); with only 10^length codes an unkeyed hash would fall to brute force;
- the seal key: AES-256-GCM of the code with the message id as associated data, stored on the
  message until the worker writes the text (a sealed code cannot be moved to another message).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.errors import SmsqError, ValidationError
from worker.settings import Settings

PLACEHOLDER = "{code}"
MIN_LENGTH = 4
MAX_LENGTH = 10
_SEAL_PREFIX = "v1."
_NONCE_BYTES = 12


class OtpUnavailableError(SmsqError):
    """No server key is configured, so codes can be neither checked nor sealed (503)."""


def new_code(length: int) -> str:
    """A uniformly random code of `length` decimal digits (leading zeros kept)."""
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"code length must be {MIN_LENGTH}..{MAX_LENGTH}")
    return f"{secrets.randbelow(10**length):0{length}d}"


def render(template: str, code: str) -> str:
    """The SMS text: the template with every `{code}` replaced."""
    return template.replace(PLACEHOLDER, code)


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


class CodeKeys:
    """The keys derived from the server key; one per process is plenty (derivation is cheap)."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise OtpUnavailableError(
                "OTP is unavailable: no server key is configured (set SMSQ_SECRET_KEY)"
            )
        material = secret.encode()
        self._mac_key = _derive(material, b"smsq otp mac v1")
        self._aead = AESGCM(_derive(material, b"smsq otp seal v1"))

    @classmethod
    def from_settings(cls, settings: Settings) -> CodeKeys:
        return cls(settings.secret_key.get_secret_value())

    def __repr__(self) -> str:
        return "CodeKeys(<hidden>)"

    def mac(self, challenge_id: str, code: str) -> str:
        """The stored form of a code: hex HMAC-SHA256 bound to its challenge."""
        data = f"{challenge_id}:{code}".encode()
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()

    def matches(self, challenge_id: str, code: str, stored_mac: str) -> bool:
        """Whether `code` is the challenge's code, compared in constant time."""
        return hmac.compare_digest(self.mac(challenge_id, code), stored_mac)

    def seal(self, code: str, message_id: str) -> str:
        """`v1.` + base64(nonce ‖ AES-GCM ciphertext), bound to `message_id`."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, code.encode(), message_id.encode())
        return _SEAL_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, sealed: str, message_id: str) -> str:
        """The code sealed for `message_id`; ValidationError if it was not sealed with this key."""
        if not sealed.startswith(_SEAL_PREFIX):
            raise ValidationError("unknown sealed-code format", code="otp_unsealable")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEAL_PREFIX) :])
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], message_id.encode())
        except (InvalidTag, ValueError):
            raise ValidationError(
                "the OTP code cannot be unsealed (was SMSQ_SECRET_KEY changed?)",
                code="otp_unsealable",
            ) from None
        return plain.decode()
