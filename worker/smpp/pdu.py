"""SMPP 3.4 PDUs, both sides' (the connector's and the tests' SMSC stand-in): the header,
binds, short messages (submit_sm, deliver_sm; data_sm in the same shape), TLVs.

A PDU is a 16-byte header (`command_length`, `command_id`, `command_status`,
`sequence_number`, big-endian) and a body of C-strings, one-byte integers, the
`short_message` octets and optional TLVs (tag, length, value). Our own small codec, pure (no
I/O): why not a library is in docs/carriers.md ("SMPP").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

HEADER = struct.Struct(">IIII")
MAX_PDU = 64 * 1024  # far above any real PDU: a longer `command_length` is garbage
RESPONSE = 0x80000000
UDHI = 0x40  # esm_class: the user data starts with a UDH


class Command(IntEnum):
    """`command_id` values (the response of a request is the request | 0x80000000)."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_TRANSMITTER = 0x00000002
    SUBMIT_SM = 0x00000004
    DELIVER_SM = 0x00000005
    UNBIND = 0x00000006
    BIND_TRANSCEIVER = 0x00000009
    ENQUIRE_LINK = 0x00000015
    DATA_SM = 0x00000103


class Status(IntEnum):
    """`command_status` values used by the stand-in and its tests (any int is allowed)."""

    ROK = 0x00
    RINVMSGLEN = 0x01
    RINVCMDID = 0x03
    RINVBNDSTS = 0x04
    RALYBND = 0x05
    RSYSERR = 0x08
    RINVSRCADR = 0x0A
    RINVDSTADR = 0x0B
    RBINDFAIL = 0x0D
    RINVPASWD = 0x0E
    RINVSYSID = 0x0F
    RMSGQFUL = 0x14
    RSUBMITFAIL = 0x45
    RTHROTTLED = 0x58
    RX_T_APPN = 0x64


class Tag(IntEnum):
    """TLV tags: delivery receipts, long text (sar_* and message_payload)."""

    RECEIPTED_MESSAGE_ID = 0x001E
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427


class MessageState(IntEnum):
    """`message_state` TLV values."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


# A receipt's `stat:` word to its `message_state`.
STATES = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}


class PduError(ValueError):
    """Bytes that are no valid PDU."""


@dataclass(frozen=True, slots=True)
class Pdu:
    """One PDU: header fields and the raw body."""

    command: int
    status: int = 0
    sequence: int = 1
    body: bytes = b""

    def encode(self) -> bytes:
        length = HEADER.size + len(self.body)
        return HEADER.pack(length, self.command, self.status, self.sequence) + self.body

    def response(self, status: int = 0, body: bytes = b"") -> Pdu:
        """The response to this request: same sequence number, id | 0x80000000."""
        return Pdu(self.command | RESPONSE, status, self.sequence, body)

    @property
    def is_response(self) -> bool:
        return bool(self.command & RESPONSE)


def split(buffer: bytes) -> tuple[list[Pdu], bytes]:
    """The whole PDUs at the start of `buffer` (cut by `command_length`), and the rest."""
    pdus = []
    while len(buffer) >= HEADER.size:
        length, command, status, sequence = HEADER.unpack_from(buffer)
        if not HEADER.size <= length <= MAX_PDU:
            raise PduError(f"command_length {length}")
        if len(buffer) < length:
            break
        pdus.append(Pdu(command, status, sequence, bytes(buffer[HEADER.size : length])))
        buffer = buffer[length:]
    return pdus, buffer


class Reader:
    """Reads the fields of a body in order."""

    def __init__(self, body: bytes) -> None:
        self.body, self.at = body, 0

    def cstring(self) -> str:
        end = self.body.find(b"\0", self.at)
        if end < 0:
            raise PduError("C-string without its NUL")
        value, self.at = self.body[self.at : end], end + 1
        return value.decode("latin-1")

    def u8(self) -> int:
        return self.octets(1)[0]

    def octets(self, count: int) -> bytes:
        if self.at + count > len(self.body):
            raise PduError("body too short")
        value, self.at = self.body[self.at : self.at + count], self.at + count
        return value

    def tlvs(self) -> dict[int, bytes]:
        found = {}
        while self.at < len(self.body):
            tag, length = struct.unpack(">HH", self.octets(4))
            found[tag] = self.octets(length)
        return found


def cstring(value: str) -> bytes:
    return value.encode("latin-1") + b"\0"


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


@dataclass(frozen=True, slots=True)
class Bind:
    """The body of bind_transmitter / bind_receiver / bind_transceiver."""

    system_id: str
    password: str = ""
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def encode(self) -> bytes:
        return (
            cstring(self.system_id) + cstring(self.password) + cstring(self.system_type)
            + bytes([self.interface_version, self.addr_ton, self.addr_npi])
            + cstring(self.address_range)
        )  # fmt: skip

    @classmethod
    def decode(cls, body: bytes) -> Bind:
        r = Reader(body)
        return cls(r.cstring(), r.cstring(), r.cstring(), r.u8(), r.u8(), r.u8(), r.cstring())


@dataclass(frozen=True, slots=True)
class ShortMessage:
    """The body of submit_sm and deliver_sm (the same layout in SMPP 3.4)."""

    source_addr: str
    destination_addr: str
    short_message: bytes = b""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    replace_if_present_flag: int = 0
    sm_default_msg_id: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def user_data(self) -> bytes:
        """What the message carries: `short_message`, or the `message_payload` TLV."""
        return self.tlvs.get(Tag.MESSAGE_PAYLOAD, self.short_message)

    @property
    def udh(self) -> bytes:
        """The user data header at the start of the user data (esm_class UDHI 0x40)."""
        data = self.user_data
        if not self.esm_class & UDHI or not data:
            return b""
        return data[: data[0] + 1]

    @property
    def text_bytes(self) -> bytes:
        """The user data after its UDH."""
        return self.user_data[len(self.udh) :]

    def encode(self) -> bytes:
        return (
            self._addresses()
            + bytes([self.esm_class, self.protocol_id, self.priority_flag])
            + cstring(self.schedule_delivery_time) + cstring(self.validity_period)
            + bytes([self.registered_delivery, self.replace_if_present_flag, self.data_coding,
                     self.sm_default_msg_id, len(self.short_message)])
            + self.short_message
            + self._tlvs()
        )  # fmt: skip

    def encode_data_sm(self) -> bytes:
        """This message as a data_sm body: no `short_message` (user data goes as TLVs)."""
        return (
            self._addresses()
            + bytes([self.esm_class, self.registered_delivery, self.data_coding])
            + self._tlvs()
        )

    def _addresses(self) -> bytes:
        """service_type, then source and destination (TON, NPI, address): how both bodies start."""
        return (
            cstring(self.service_type)
            + bytes([self.source_addr_ton, self.source_addr_npi]) + cstring(self.source_addr)
            + bytes([self.dest_addr_ton, self.dest_addr_npi]) + cstring(self.destination_addr)
        )  # fmt: skip

    def _tlvs(self) -> bytes:
        return b"".join(tlv(tag, value) for tag, value in self.tlvs.items())

    @classmethod
    def decode_data_sm(cls, body: bytes) -> ShortMessage:
        """A data_sm body in deliver_sm's shape (its text in the `message_payload` TLV)."""
        r = Reader(body)
        service_type, source_ton, source_npi, source, dest_ton, dest_npi, destination = (
            _read_addresses(r)
        )
        esm_class, registered, coding = r.u8(), r.u8(), r.u8()
        return cls(
            source, destination, b"", esm_class, registered, coding, service_type, source_ton,
            source_npi, dest_ton, dest_npi, tlvs=r.tlvs(),
        )  # fmt: skip

    @classmethod
    def decode(cls, body: bytes) -> ShortMessage:
        r = Reader(body)
        service_type, source_ton, source_npi, source, dest_ton, dest_npi, destination = (
            _read_addresses(r)
        )
        esm_class, protocol_id, priority = r.u8(), r.u8(), r.u8()
        schedule, validity = r.cstring(), r.cstring()
        registered, replace, coding, default_id = r.u8(), r.u8(), r.u8(), r.u8()
        short_message = r.octets(r.u8())
        return cls(
            source, destination, short_message, esm_class, registered, coding, service_type,
            source_ton, source_npi, dest_ton, dest_npi, protocol_id, priority, schedule,
            validity, replace, default_id, r.tlvs(),
        )  # fmt: skip


def _read_addresses(r: Reader) -> tuple[str, int, int, str, int, int, str]:
    """service_type, source (TON, NPI, address), destination (TON, NPI, address)."""
    return r.cstring(), r.u8(), r.u8(), r.cstring(), r.u8(), r.u8(), r.cstring()


def message_id_of(body: bytes) -> str:
    """The `message_id` of a submit_sm_resp / data_sm_resp body ("" when it has none)."""
    end = body.find(b"\0")
    return (body if end < 0 else body[:end]).decode("latin-1")
