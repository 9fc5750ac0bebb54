"""The SMPP SMSC stand-in (`tests.smpp`): its codec round-trips, and it answers as scripted."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.smpp.pdu import (
    Bind,
    Command,
    MessageState,
    Pdu,
    PduError,
    Reader,
    ShortMessage,
    Status,
    Tag,
    split,
)
from tests.smpp.smsc import Outcome, RunningSmsc, by_last_digit, running_smsc

UDH = bytes.fromhex("050003a70201")


class TestCodec:
    def test_short_message_round_trips(self) -> None:
        """A submit_sm body with a UDH and TLVs decodes to what was encoded."""
        message = ShortMessage(
            "smsq", "4915110000001", UDH + b"hello", esm_class=0x40, registered_delivery=1,
            data_coding=8, source_addr_ton=5, tlvs={Tag.MESSAGE_STATE: b"\x02"},
        )  # fmt: skip
        decoded = ShortMessage.decode(message.encode())
        assert decoded == message
        assert (decoded.udh, decoded.text_bytes) == (UDH, b"hello")

    def test_bind_round_trips(self) -> None:
        """A bind body decodes to what was encoded."""
        bind = Bind("smsq", "secret", "VMA", 0x34, 1, 1, "")
        assert Bind.decode(bind.encode()) == bind

    def test_split_cuts_by_command_length(self) -> None:
        """Two PDUs and half of a third in one read: two now, the rest kept."""
        first, second = Pdu(Command.ENQUIRE_LINK, 0, 1), Pdu(Command.UNBIND, 0, 2, b"x")
        data = first.encode() + second.encode() + first.encode()[:7]
        pdus, rest = split(data)
        assert (pdus, rest) == ([first, second], first.encode()[:7])

    @pytest.mark.parametrize("body", [b"abc", b"a\0b\0c\0\x34\x00"])
    def test_truncated_bodies_are_errors(self, body: bytes) -> None:
        """A body that ends early is a PduError, never an IndexError."""
        with pytest.raises(PduError):
            Bind.decode(body)

    def test_absurd_length_is_an_error(self) -> None:
        """A command_length below the header size is garbage."""
        with pytest.raises(PduError):
            split(struct.pack(">IIII", 3, 4, 0, 1))


class Esme:
    """A minimal client: sends PDUs, reads the next one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.buffer = reader, writer, b""
        self.sequence = 0

    async def request(self, command: int, body: bytes = b"") -> int:
        self.sequence += 1
        self.writer.write(Pdu(command, 0, self.sequence, body).encode())
        await self.writer.drain()
        return self.sequence

    async def read(self) -> Pdu:
        while True:
            pdus, self.buffer = split(self.buffer)
            if pdus:
                first = pdus[0]
                self.buffer = b"".join(p.encode() for p in pdus[1:]) + self.buffer
                return first
            self.buffer += await asyncio.wait_for(self.reader.read(65536), 5)


async def session(port: int) -> Esme:
    esme = Esme(*await asyncio.open_connection("127.0.0.1", port))
    await esme.request(Command.BIND_TRANSCEIVER, Bind("smsq", "pw").encode())
    answer = await esme.read()
    assert (answer.command, answer.status) == (Command.BIND_TRANSCEIVER | 0x80000000, 0)
    return esme


async def submit(esme: Esme, to: str) -> Pdu:
    body = ShortMessage("smsq", to, b"Your code is 123456", registered_delivery=1).encode()
    sequence = await esme.request(Command.SUBMIT_SM, body)
    answer = await esme.read()
    assert (answer.command, answer.sequence) == (Command.SUBMIT_SM | 0x80000000, sequence)
    return answer


SCRIPT = by_last_digit(
    {"1": Outcome(submit_status=Status.RSUBMITFAIL), "3": Outcome(stat="EXPIRED", err="001")}
)


@pytest.fixture
def smsc() -> Iterator[RunningSmsc]:
    with running_smsc(SCRIPT) as running:
        yield running


class TestSmsc:
    def test_scripted_refusal_and_receipt(self, smsc: RunningSmsc) -> None:
        """A refused number gets the status and no id; another gets an id, then a receipt
        with the scripted stat in its text and TLVs, acknowledged."""

        async def scenario() -> tuple[Pdu, Pdu, ShortMessage]:
            esme = await session(smsc.port)
            refused = await submit(esme, "4915110000001")
            taken = await submit(esme, "4915110000003")
            receipt = await esme.read()
            assert receipt.command == Command.DELIVER_SM
            esme.writer.write(receipt.response(body=b"\0").encode())
            await esme.request(Command.ENQUIRE_LINK)
            assert (await esme.read()).command == Command.ENQUIRE_LINK | 0x80000000
            await esme.request(Command.UNBIND)
            assert (await esme.read()).command == Command.UNBIND | 0x80000000
            esme.writer.close()
            await esme.writer.wait_closed()
            return refused, taken, ShortMessage.decode(receipt.body)

        refused, taken, receipt = asyncio.run(scenario())
        assert (refused.status, refused.body) == (Status.RSUBMITFAIL, b"")
        assert taken.status == 0
        message_id = Reader(taken.body).cstring()
        assert receipt.esm_class == 0x04
        assert receipt.source_addr == "4915110000003"
        text = receipt.short_message.decode()
        assert text.startswith(f"id:{message_id} sub:001 dlvrd:000 submit date:")
        assert " stat:EXPIRED err:001 text:Your code is 123456" in text
        assert receipt.tlvs[Tag.RECEIPTED_MESSAGE_ID] == message_id.encode() + b"\0"
        assert receipt.tlvs[Tag.MESSAGE_STATE] == bytes([MessageState.EXPIRED])
        counters = smsc.counters
        assert (counters.submits, counters.refused, counters.receipts_sent) == (2, 1, 1)
        assert (counters.enquire_links, counters.unbinds) == (1, 1)
        assert [s.message_id for s in smsc.submitted] == ["", message_id]

    def test_submit_before_bind_is_refused(self, smsc: RunningSmsc) -> None:
        """An unbound session cannot submit (ESME_RINVBNDSTS)."""

        async def scenario() -> Pdu:
            esme = Esme(*await asyncio.open_connection("127.0.0.1", smsc.port))
            answer = await submit(esme, "4915110000002")
            esme.writer.close()
            await esme.writer.wait_closed()
            return answer

        assert asyncio.run(scenario()).status == Status.RINVBNDSTS
        assert smsc.counters.submits == 0

    def test_stops_serving_on_exit(self) -> None:
        """After the block, the port is closed."""
        with running_smsc() as running:
            port = running.port
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
