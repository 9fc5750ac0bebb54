"""What smsq writes into submit_sm and reads out of deliver_sm / data_sm (`worker.smpp`)."""

from __future__ import annotations

import pytest

from worker.carriers.base import SegmentSubmission
from worker.contract import SegmentStatus
from worker.encoding import encode_message
from worker.encoding.gsm7 import to_text
from worker.encoding.national import charset_for
from worker.encoding.udh import parse
from worker.smpp.config import SmppConfig
from worker.smpp.inbound import (
    NotAReceiptError,
    canonical_id,
    decode_text,
    is_receipt,
    mobile_originated,
    parse_receipt,
)
from worker.smpp.pdu import MessageState, ShortMessage, Status, Tag, cstring
from worker.smpp.statuses import Verdict, describe, error_code, verdict
from worker.smpp.submit import address, submit_body

CONFIG = SmppConfig(host="smsc", system_id="smsq")
LONG_GSM = "Long {text} with € and ~ escapes " * 8


def submissions(text: str, national: str | None = None) -> list[SegmentSubmission]:
    """The segments of `text` as the Sender hands them to a carrier."""
    encoded = encode_message(text, reference=0x2A, national=national)
    to, sender = "+4915112345678", "smsq"
    return [
        SegmentSubmission(
            message_id="m1", seq=s.seq, total=s.total, to=to, sender=sender, udh=s.udh,
            payload=s.payload, data_coding=s.data_coding, text=s.text, full_text=encoded.text,
            receipt_url="",
        )
        for s in encoded.segments
    ]  # fmt: skip


def submitted(segment: SegmentSubmission, config: SmppConfig = CONFIG) -> ShortMessage:
    return ShortMessage.decode(submit_body(segment, config))


class TestAddresses:
    @pytest.mark.parametrize(
        ("number", "expected"),
        [
            ("+4915112345678", (1, 1, "4915112345678")),
            ("4915112345678", (1, 1, "4915112345678")),
            ("12345", (0, 1, "12345")),
            ("smsq", (5, 0, "smsq")),
            ("Bank 24", (5, 0, "Bank 24")),
        ],
    )  # fmt: skip
    def test_ton_npi_from_the_number(self, number: str, expected: tuple[int, int, str]) -> None:
        """International 1/1 without '+'; a short code 0/1; an alphanumeric sender 5/0."""
        assert address(number) == expected

    def test_the_carrier_may_force_them(self) -> None:
        config = SmppConfig(host="smsc", system_id="smsq", source_ton=2, source_npi=1, dest_npi=9)
        pdu = submitted(submissions("hi")[0], config)
        assert (pdu.source_addr_ton, pdu.source_addr_npi) == (2, 1)
        assert (pdu.dest_addr_ton, pdu.dest_addr_npi) == (1, 9)


class TestSubmitSm:
    def test_a_single_gsm_message_is_unpacked_septets(self) -> None:
        """One septet per octet, data_coding 0, no UDH, a receipt asked for."""
        pdu = submitted(submissions("Code: 1234 {ok}")[0])
        assert (pdu.data_coding, pdu.esm_class, pdu.registered_delivery) == (0, 0, 1)
        assert to_text(pdu.short_message, charset_for(0, 0)) == "Code: 1234 {ok}"
        assert pdu.short_message[11] == 0x1B  # "{" is an escape pair

    def test_multipart_keeps_the_encoders_udh(self) -> None:
        """Each part: esm_class UDHI, the concatenation IE, then that part's septets."""
        parts = [submitted(s) for s in submissions(LONG_GSM)]
        assert len(parts) > 1
        assert {p.esm_class for p in parts} == {0x40}
        assert [parse(p.udh).seq for p in parts] == list(range(1, len(parts) + 1))
        texts = [to_text(p.text_bytes, charset_for(0, 0)) for p in parts]
        assert "".join(texts) == LONG_GSM

    def test_ucs2_is_utf16be(self) -> None:
        pdu = submitted(submissions("Привет 😀")[0])
        assert (pdu.data_coding, pdu.short_message.decode("utf-16-be")) == (8, "Привет 😀")

    def test_national_shift_tables_travel_in_the_udh(self) -> None:
        """Turkish text on the Turkish tables: IE 0x24/0x25 in the UDH, septets of that table."""
        text = "Şifreniz: ğüçı"
        (segment,) = submissions(text, national="turkish")
        pdu = submitted(segment)
        header = parse(pdu.udh)
        assert pdu.esm_class == 0x40
        assert header.locking or header.single
        charset = charset_for(header.locking, header.single)
        assert to_text(pdu.text_bytes, charset) == text

    def test_sar_tlvs_replace_the_concatenation_ie(self) -> None:
        """`long_text = "sar"`: no UDH, sar_msg_ref_num / total / seqnum TLVs instead."""
        config = SmppConfig(host="smsc", system_id="smsq", long_text="sar")
        parts = [submitted(s, config) for s in submissions(LONG_GSM)]
        assert {p.esm_class for p in parts} == {0}
        assert {p.tlvs[Tag.SAR_MSG_REF_NUM] for p in parts} == {b"\x00\x2a"}
        assert [p.tlvs[Tag.SAR_SEGMENT_SEQNUM][0] for p in parts] == list(range(1, len(parts) + 1))
        assert {p.tlvs[Tag.SAR_TOTAL_SEGMENTS][0] for p in parts} == {len(parts)}

    def test_message_payload_carries_the_whole_text(self) -> None:
        """`long_text = "payload"`: one submit_sm, empty short_message, the text as a TLV."""
        config = SmppConfig(host="smsc", system_id="smsq", long_text="payload")
        pdu = submitted(submissions(LONG_GSM)[0], config)
        assert (pdu.short_message, pdu.esm_class) == (b"", 0)
        assert to_text(pdu.tlvs[Tag.MESSAGE_PAYLOAD], charset_for(0, 0)) == LONG_GSM


def receipt(text: str = "", esm_class: int = 0x04, **tlvs: bytes) -> ShortMessage:
    tags = {getattr(Tag, name.upper()): value for name, value in tlvs.items()}
    return ShortMessage("4915112345678", "smsq", text.encode(), esm_class=esm_class, tlvs=tags)


TEXT = (
    "id:1A2B sub:001 dlvrd:001 submit date:2412011200 done date:241201120530 stat:{} err:{} text:"
)


class TestReceipts:
    @pytest.mark.parametrize(
        ("stat", "status"),
        [
            ("DELIVRD", SegmentStatus.DELIVERED), ("UNDELIV", SegmentStatus.UNDELIVERED),
            ("EXPIRED", SegmentStatus.EXPIRED), ("REJECTD", SegmentStatus.REJECTED),
            ("DELETED", SegmentStatus.UNDELIVERED), ("UNKNOWN", SegmentStatus.UNDELIVERED),
            ("ACCEPTD", SegmentStatus.ACCEPTED), ("ENROUTE", SegmentStatus.ACCEPTED),
        ],
    )  # fmt: skip
    def test_the_text_alone(self, stat: str, status: SegmentStatus) -> None:
        """Without TLVs the `id:` and `stat:` of the text decide, as other carriers' do."""
        found = parse_receipt(receipt(TEXT.format(stat, "000")))
        assert (found.carrier_id, found.status) == ("1a2b", status)
        assert found.done_at == "2024-12-01T12:05:30+00:00"

    def test_tlvs_win_over_the_text(self) -> None:
        """receipted_message_id, message_state and network_error_code are preferred."""
        found = parse_receipt(
            receipt(
                TEXT.format("DELIVRD", "000"),
                receipted_message_id=cstring("777"),
                message_state=bytes([MessageState.UNDELIVERABLE]),
                network_error_code=b"\x03\x00\x22",
            )
        )
        assert (found.carrier_id, found.status, found.error_code) == (
            "777", SegmentStatus.UNDELIVERED, "034",
        )  # fmt: skip

    def test_a_text_error_code_and_ascii_network_codes(self) -> None:
        assert parse_receipt(receipt(TEXT.format("UNDELIV", "011"))).error_code == "011"
        ascii_code = receipt(TEXT.format("UNDELIV", "000"), network_error_code=b"069")
        assert parse_receipt(ascii_code).error_code == "069"

    @pytest.mark.parametrize(
        ("esm_class", "expected"), [(0x04, True), (0x44, True), (0x08, True), (0x20, True),
                                    (0x00, False), (0x40, False)],
    )  # fmt: skip
    def test_esm_class_marks_receipts(self, esm_class: int, expected: bool) -> None:
        """Message type bits 2-5, whatever UDHI says."""
        assert is_receipt(receipt(esm_class=esm_class)) is expected

    def test_a_receipt_without_id_or_state_is_unreadable(self) -> None:
        with pytest.raises(NotAReceiptError):
            parse_receipt(receipt("stat:DELIVRD"))
        with pytest.raises(NotAReceiptError):
            parse_receipt(receipt("id:12 stat:WHATEVER"))

    @pytest.mark.parametrize(
        ("raw", "base", "canonical"),
        [("0A1B", "text", "a1b"), ("a1b", "text", "a1b"), ("00012", "text", "12"),
         ("msg-7f", "text", "msg-7f"), ("0000001F", "hex", "31"), ("31", "decimal", "31"),
         ("zz", "hex", "zz")],
    )  # fmt: skip
    def test_ids_compare_across_bases(self, raw: str, base: str, canonical: str) -> None:
        """Case, zero padding and (with `id_bases`) hex against decimal do not matter."""
        assert canonical_id(raw, base) == canonical  # type: ignore[arg-type]


class TestMobileOriginated:
    def test_gsm_and_ucs2_text(self) -> None:
        septets = charset_for(0, 0).septets("STOP {now}")
        gsm = ShortMessage("4915112345678", "4930123", septets, source_addr_ton=1)
        message = mobile_originated(gsm)
        assert (message.sender, message.recipient, message.text) == (
            "+4915112345678", "4930123", "STOP {now}",
        )  # fmt: skip
        assert decode_text("Stopp ✋".encode("utf-16-be"), 8) == "Stopp ✋"
        assert decode_text(b"caf\xe9", 3) == "café"


class TestStatuses:
    @pytest.mark.parametrize(
        ("status", "nack", "expected"),
        [
            (Status.ROK, False, Verdict.ACCEPTED),
            (Status.RTHROTTLED, False, Verdict.THROTTLED),
            (Status.RMSGQFUL, False, Verdict.THROTTLED),
            (Status.RSYSERR, False, Verdict.TRANSIENT),
            (Status.RX_T_APPN, False, Verdict.TRANSIENT),
            (Status.RINVCMDID, True, Verdict.TRANSIENT),
            (Status.RINVDSTADR, False, Verdict.REJECTED),
            (Status.RSUBMITFAIL, False, Verdict.REJECTED),
            (0x401, False, Verdict.REJECTED),
        ],
    )  # fmt: skip
    def test_what_an_answer_means(self, status: int, nack: bool, expected: Verdict) -> None:
        """Throttles and transient errors go again; everything else not 0 is permanent."""
        assert verdict(status, nack=nack) is expected

    def test_the_error_code_is_the_status_in_hex(self) -> None:
        assert error_code(0x0B) == "0x0000000B"
        assert describe(0x0B) == "ESME_RINVDSTADR (0x0000000B)"
        assert describe(0x401) == "vendor-specific (0x00000401)"
