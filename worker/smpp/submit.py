"""A segment as a `submit_sm` body: addresses with their TON/NPI, data_coding, user data.

Text goes as the encoder cut it (`worker.encoding`): GSM 03.38 as *unpacked* septets, one per
octet (what SMSCs take for data_coding 0), national shift tables named in the UDH (IEs 0x24 /
0x25), UCS-2 as UTF-16BE. A long text travels as the carrier's `long_text` says:

- `udh`: each segment with its concatenation UDH, esm_class UDHI (0x40);
- `sar`: each segment with the `sar_msg_ref_num` / `sar_total_segments` / `sar_segment_seqnum`
  TLVs instead of the concatenation IE (a UDH stays only for national shift IEs);
- `payload`: the whole text in one `message_payload` TLV; the SMSC cuts it.
"""

from __future__ import annotations

import struct

from worker.carriers.base import SegmentSubmission
from worker.encoding.national import charset_for
from worker.encoding.udh import IEI_CONCAT_8, IEI_CONCAT_16, build, parse
from worker.smpp.config import SmppConfig
from worker.smpp.pdu import UDHI, ShortMessage, Tag

UCS2 = 8
# registered_delivery: a receipt on success or failure (SMPP 3.4 §5.2.17, bits 1-0 = 01).
RECEIPT_ALWAYS = 0x01
# TON / NPI (SMPP 3.4 §5.2.5-6).
TON_UNKNOWN, TON_INTERNATIONAL, TON_ALPHANUMERIC = 0, 1, 5
NPI_UNKNOWN, NPI_ISDN = 0, 1


def address(number: str) -> tuple[int, int, str]:
    """(TON, NPI, address) of a number: `+digits` international 1/1 without the '+', digits
    alone 1/1 too when long enough to be international (10+), shorter ones (short codes)
    unknown / ISDN 0/1, anything else an alphanumeric sender 5/0."""
    digits = number.removeprefix("+")
    if digits.isascii() and digits.isdigit():
        if number.startswith("+") or len(digits) >= 10:
            return TON_INTERNATIONAL, NPI_ISDN, digits
        return TON_UNKNOWN, NPI_ISDN, digits
    return TON_ALPHANUMERIC, NPI_UNKNOWN, number


def submit_body(segment: SegmentSubmission, config: SmppConfig) -> bytes:
    """The `submit_sm` body for one segment (or, with `payload`, the whole text)."""
    source_ton, source_npi, source = address(segment.sender)
    dest_ton, dest_npi, destination = address(segment.to)
    udh, data, tlvs = user_data(segment, config.long_text)
    message = ShortMessage(
        source_addr=source,
        destination_addr=destination,
        short_message=b"" if config.long_text == "payload" else udh + data,
        esm_class=UDHI if udh else 0,
        registered_delivery=RECEIPT_ALWAYS if segment.want_receipt else 0,
        data_coding=segment.data_coding,
        source_addr_ton=_either(config.source_ton, source_ton),
        source_addr_npi=_either(config.source_npi, source_npi),
        dest_addr_ton=_either(config.dest_ton, dest_ton),
        dest_addr_npi=_either(config.dest_npi, dest_npi),
        tlvs=tlvs,
    )
    return message.encode()


def _either(forced: int | None, derived: int) -> int:
    """The carrier's override when it has one, else what the number says."""
    return derived if forced is None else forced


def user_data(segment: SegmentSubmission, long_text: str) -> tuple[bytes, bytes, dict[int, bytes]]:
    """(UDH, text octets, TLVs) of a segment in the carrier's `long_text` form."""
    header = parse(segment.udh)
    charset = charset_for(header.locking, header.single)
    if long_text == "payload":
        text = segment.full_text
        udh = build(_shift_ies(segment.udh))
        data = text.encode("utf-16-be") if segment.data_coding == UCS2 else charset.septets(text)
        return udh, data, {int(Tag.MESSAGE_PAYLOAD): udh + data}
    data = segment.payload if segment.data_coding == UCS2 else charset.septets(segment.text)
    if long_text == "sar" and header.reference is not None:
        tlvs: dict[int, bytes] = {
            Tag.SAR_MSG_REF_NUM: struct.pack(">H", header.reference),
            Tag.SAR_TOTAL_SEGMENTS: bytes((header.total,)),
            Tag.SAR_SEGMENT_SEQNUM: bytes((header.seq,)),
        }
        return build(_shift_ies(segment.udh)), data, tlvs
    return segment.udh, data, {}


def _shift_ies(udh: bytes) -> bytes:
    """The UDH's information elements without the concatenation one (national shifts stay)."""
    kept, pos = b"", 1
    while pos + 1 < len(udh):
        size = 2 + udh[pos + 1]
        if udh[pos] not in (IEI_CONCAT_8, IEI_CONCAT_16):
            kept += udh[pos : pos + size]
        pos += size
    return kept
