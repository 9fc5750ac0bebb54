"""The SMPP codec the stand-in speaks is smsq's own (`worker.smpp.pdu`), re-exported here."""

from worker.smpp.pdu import (
    HEADER,
    MAX_PDU,
    RESPONSE,
    STATES,
    Bind,
    Command,
    MessageState,
    Pdu,
    PduError,
    Reader,
    ShortMessage,
    Status,
    Tag,
    cstring,
    split,
    tlv,
)

__all__ = [
    "HEADER", "MAX_PDU", "RESPONSE", "STATES", "Bind", "Command", "MessageState", "Pdu",
    "PduError", "Reader", "ShortMessage", "Status", "Tag", "cstring", "split", "tlv",
]  # fmt: skip
