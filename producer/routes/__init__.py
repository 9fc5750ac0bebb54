"""API routes, one module per resource.

Path parameters that are ids (messages, batches, OTP challenges: 32 lower-case hex characters)
use the `id` convertor, so `/sms/send` is never read as the message `send`: a wrong method on
a known path is a 405 naming the right one, not a 404 for a message that cannot exist.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class IdConvertor(Convertor[str]):
    regex = "[0-9a-f]{32}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", IdConvertor())
