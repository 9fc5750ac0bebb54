"""What a `deliver_sm` (or `data_sm`) from the SMSC says: a receipt for one of our submits, or
a mobile-originated message.

A receipt has a message type in esm_class bits 2-5 (0x04 SMSC delivery receipt, 0x08 / 0x10 SME
acknowledgements, 0x20 intermediate notification). Its id and state come from the TLVs
(`receipted_message_id`, `message_state`, `network_error_code`) when present, else from the
text (SMPP 3.4 Appendix B, `id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`),
and map onto segment states as every carrier's do: DELIVRD delivered, UNDELIV / DELETED /
UNKNOWN undelivered, EXPIRED expired, REJECTD rejected, ACCEPTD / ENROUTE (and Kannel's
BUFFRED / ACKED) accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.carriers.base import CarrierReceipt
from worker.contract import SegmentStatus
from worker.encoding.gsm7 import to_text
from worker.encoding.national import charset_for
from worker.encoding.udh import parse
from worker.smpp.config import IdBase
from worker.smpp.pdu import MessageState, ShortMessage, Tag

RECEIPT_TYPES = 0x3C  # esm_class bits 2-5: any receipt or acknowledgement

STATES: dict[str, SegmentStatus] = {
    "DELIVRD": SegmentStatus.DELIVERED,
    "DELIVERED": SegmentStatus.DELIVERED,
    "UNDELIV": SegmentStatus.UNDELIVERED,
    "UNDELIVERABLE": SegmentStatus.UNDELIVERED,
    "DELETED": SegmentStatus.UNDELIVERED,
    "UNKNOWN": SegmentStatus.UNDELIVERED,
    "EXPIRED": SegmentStatus.EXPIRED,
    "REJECTD": SegmentStatus.REJECTED,
    "REJECTED": SegmentStatus.REJECTED,
    "ACCEPTD": SegmentStatus.ACCEPTED,
    "ACCEPTED": SegmentStatus.ACCEPTED,
    "ENROUTE": SegmentStatus.ACCEPTED,
    "BUFFRED": SegmentStatus.ACCEPTED,
    "BUFFERD": SegmentStatus.ACCEPTED,
    "ACKED": SegmentStatus.ACCEPTED,
}
MESSAGE_STATES: dict[int, str] = {
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
}
FAILED = frozenset({SegmentStatus.UNDELIVERED, SegmentStatus.EXPIRED, SegmentStatus.REJECTED})

_ID = re.compile(r"\bid:(\S{1,64})")
_STAT = re.compile(r"\bstat:([A-Za-z]{5,13})")
_ERR = re.compile(r"\berr:([0-9A-Za-z]{1,8})")
_DONE = re.compile(r"\bdone date:(\d{10,12})")


class NotAReceiptError(ValueError):
    """A receipt without an id or a state we can read."""


def is_receipt(message: ShortMessage) -> bool:
    """Whether esm_class marks a receipt or acknowledgement (not a message from a handset)."""
    return bool(message.esm_class & RECEIPT_TYPES)


def canonical_id(raw: str, base: IdBase = "text") -> str:
    """An SMSC message id in the form both its submit_sm_resp and its receipts map to.

    With a numeric base the id is that base's number, written in decimal (an SMSC answering
    in hex and reporting in decimal gives the same key). As text, surrounding blanks go, and
    an id of hex digits only is lower-cased without leading zeros (`0A1B` and `a1b` agree).
    """
    text = raw.strip()
    if base != "text":
        try:
            return str(int(text, 16 if base == "hex" else 10))
        except ValueError:
            pass  # not a number in that base after all: compare it as text
    if text and all(ch in "0123456789abcdefABCDEF" for ch in text):
        return text.lower().lstrip("0") or "0"
    return text


def parse_receipt(message: ShortMessage, base: IdBase = "text") -> CarrierReceipt:
    """The receipt a deliver_sm carries; `NotAReceiptError` when it names no id or state."""
    text = message.text_bytes.decode("latin-1")
    raw_id = _cstring(message.tlvs.get(Tag.RECEIPTED_MESSAGE_ID))
    if raw_id is None:
        found = _ID.search(text)
        raw_id = found.group(1) if found else None
    word = _state_word(message, text)
    status = STATES.get(word or "")
    if not raw_id or status is None:
        raise NotAReceiptError(f"receipt without {'an id' if not raw_id else 'a known state'}")
    err = _network_error(message.tlvs.get(Tag.NETWORK_ERROR_CODE)) or _text_error(text)
    failed = status in FAILED
    return CarrierReceipt(
        carrier_id=canonical_id(raw_id, base),
        status=status,
        error_code=err if failed and err else (f"smpp_{word}" if failed else None),
        error_message=f"stat:{word} err:{err or '000'}" if failed else None,
        done_at=_done_at(text),
    )


def _state_word(message: ShortMessage, text: str) -> str | None:
    """`message_state` (preferred) as its receipt word, else the text's `stat:`."""
    state = message.tlvs.get(Tag.MESSAGE_STATE)
    if state and len(state) == 1 and state[0] in MESSAGE_STATES:
        return MESSAGE_STATES[state[0]]
    found = _STAT.search(text)
    return found.group(1).upper() if found else None


def _cstring(value: bytes | None) -> str | None:
    if not value:
        return None
    return value.split(b"\0", 1)[0].decode("latin-1").strip() or None


def _network_error(value: bytes | None) -> str | None:
    """`network_error_code`: a network type octet and a 2-octet code (some SMSCs send three
    ASCII digits instead); written as three decimal digits, like the text's `err:`, or None
    when zero."""
    if not value or len(value) != 3:
        return None
    code = int(value) if value.isdigit() else int.from_bytes(value[1:], "big")
    return f"{code:03d}" if code else None


def _text_error(text: str) -> str | None:
    found = _ERR.search(text)
    if found is None or not found.group(1).strip("0"):
        return None
    return found.group(1)


def _done_at(text: str) -> str | None:
    """`done date:YYMMDDhhmm[ss]` as ISO 8601 (UTC: receipts do not say their zone)."""
    found = _DONE.search(text)
    if found is None:
        return None
    stamp = found.group(1)
    year, month, day, hour, minute, second = (
        int(stamp[i : i + 2] or 0) for i in range(0, 12, 2)
    )  # not strptime: ten times slower, once per receipt
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=UTC).isoformat()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class MobileOriginated:
    """A message from a handset, as the SMSC handed it over."""

    sender: str  # E.164 with '+' when the SMSC said international
    recipient: str
    text: str
    udh: bytes
    received_at: int = 0  # ms; set by the link when it takes the deliver_sm
    mo_id: str = ""  # chosen then too: storing it again after a lost reply adds nothing


def mobile_originated(message: ShortMessage) -> MobileOriginated:
    """The MO message a non-receipt deliver_sm carries (its UDH kept for reassembly)."""
    udh, data = message.udh, message.text_bytes
    return MobileOriginated(
        sender=_number(message.source_addr, message.source_addr_ton),
        recipient=_number(message.destination_addr, message.dest_addr_ton),
        text=decode_text(data, message.data_coding, udh),
        udh=udh,
    )


def decode_text(data: bytes, data_coding: int, udh: bytes = b"") -> str:
    """User data as text: GSM 03.38 (unpacked septets; shift tables from the UDH), IA5,
    Latin-1, UCS-2; binary codings as hex."""
    coding = data_coding & 0x0F if data_coding & 0xF0 == 0xF0 else data_coding
    if coding == 0:
        header = parse(udh)
        septets = bytes(octet & 0x7F for octet in data)
        return to_text(septets.rstrip(b"\x1b"), charset_for(header.locking, header.single))
    if coding == 8:
        return data.decode("utf-16-be", errors="replace")
    if coding in (1, 3):
        return data.decode("latin-1")
    return data.hex()


def _number(addr: str, ton: int) -> str:
    """An address with '+' when its TON says international."""
    if ton == 1 and addr.isdigit():
        return "+" + addr
    return addr
