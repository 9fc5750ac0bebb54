"""The text of an OTP message, built only when the worker hands it to the carrier.

An OTP message is stored with its template as `content` (`Your code is {code}`) and the code
sealed in the `otp_code` field (`worker.otp.codes`), so the code is in clear neither in Redis
nor in any task: `Sender._encode` calls `message_text` and the clear text lives only in memory
on its way to the carrier.
"""

from __future__ import annotations

from functools import lru_cache

from worker.errors import ValidationError
from worker.otp.codes import CodeKeys, OtpUnavailableError, render
from worker.settings import Settings, get_settings
from worker.store import Message

CODE_FIELD = "otp_code"  # message hash field: the sealed code
CHALLENGE_FIELD = "otp_challenge"  # message hash field: the challenge the message carries


@lru_cache(maxsize=4)
def _keys(secret: str) -> CodeKeys:
    return CodeKeys(secret)


def code_keys(settings: Settings) -> CodeKeys:
    """The process's code keys for `settings` (derived once per server key)."""
    return _keys(settings.secret_key.get_secret_value())


def message_text(message: Message, settings: Settings | None = None) -> str:
    """What to send: `content`, or for an OTP message its template with the code unsealed.

    Failures are ValidationErrors, so the sender fails the message cleanly (no code in the
    error): a worker without the server key, or with another key than the API's.
    """
    sealed = message.extra.get(CODE_FIELD) if message.otp else None
    if not sealed:
        return message.content
    try:
        keys = code_keys(settings or get_settings())
    except OtpUnavailableError as exc:
        raise ValidationError(str(exc), code="otp_unavailable") from None
    return render(message.content, keys.unseal(sealed, message.id))
