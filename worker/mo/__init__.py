"""Mobile-originated (MO) messages in: the entry point every inbound channel calls.

A placeholder until inbound messages are stored and delivered: it records nothing and
returns. The SMPP connector already calls it for each `deliver_sm` that is not a receipt, and
answers the SMSC only after it returned, so an implementation that stores the message in Redis
makes that answer mean "kept".
"""

from __future__ import annotations

import redis


def accept(
    store_client: redis.Redis,
    carrier_name: str,
    sender: str,
    recipient: str,
    text: str,
    *,
    udh: bytes = b"",
    received_at: int,
) -> None:
    """Take one MO message (one part of a multipart one, with its `udh`) from `carrier_name`:
    `sender` the handset's number, `recipient` ours, `received_at` Unix ms. Keeps nothing yet."""
    del store_client, carrier_name, sender, recipient, text, udh, received_at
