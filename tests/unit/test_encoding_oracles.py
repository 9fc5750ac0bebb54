"""The engine checked against independent implementations: gsmcodecs and smspdudecoder."""

from __future__ import annotations

import codecs
import importlib
from functools import cache
from types import ModuleType

import gsmcodecs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.strategies import GSM7_CHARS, gsm7_texts, ucs2_texts
from worker.encoding import Segment, encode_message, is_gsm7
from worker.encoding.alphabet import DEFAULT
from worker.encoding.gsm7 import header_septets, to_text
from worker.encoding.national import LOCKING_TABLES, SINGLE_TABLES, charset_for

# Every (locking, single) pair we can signal, by TS 23.038 language id.
PAIRS = [(lock, single) for lock in LOCKING_TABLES for single in SINGLE_TABLES]


def codec(lock: int, single: int) -> codecs.CodecInfo:
    """gsmcodecs' codec for a pair of tables (TS 23.038 v18.0.0)."""
    assert gsmcodecs.GSMCHARMAPS  # registered on import
    return codecs.lookup(f"gsm23.038-{lock}-{single}")


def oracle_chars(lock: int, single: int) -> set[str]:
    """The characters gsmcodecs can encode with a pair of tables."""
    maps = gsmcodecs.GSMCHARMAPS
    return {chr(o) for o in maps[lock]["locking"]["encode"]} | {
        chr(o) for o in maps[single]["singleShift"]["encode"]
    }


class TestTablesAgainstGsmcodecs:
    @pytest.mark.parametrize(("lock", "single"), PAIRS)
    def test_carries_the_same_characters(self, lock: int, single: int) -> None:
        """Our charset carries exactly what gsmcodecs encodes, ESC excepted."""
        assert charset_for(lock, single).chars == oracle_chars(lock, single) - {"\x1b"}

    @pytest.mark.parametrize(("lock", "single"), PAIRS)
    def test_encodes_each_character_alike(self, lock: int, single: int) -> None:
        """Each character gets the same septet(s), ESC pairs included."""
        charset = charset_for(lock, single)
        info = codec(lock, single)
        mismatches = {
            ch: (charset.septets(ch), info.encode(ch)[0])
            for ch in charset.chars
            if charset.septets(ch) != info.encode(ch)[0]
        }
        assert mismatches == {}

    @pytest.mark.parametrize(("lock", "single"), PAIRS)
    def test_decodes_each_code_alike(self, lock: int, single: int) -> None:
        """Each septet, and ESC with each extension code, decodes to the same character."""
        charset = charset_for(lock, single)
        info = codec(lock, single)
        codes = [bytes([c]) for c in range(128) if c != 0x1B]
        codes += [bytes([0x1B, c]) for c in charset.single_table]
        assert {c: to_text(c, charset) for c in codes} == {c: info.decode(c)[0] for c in codes}

    def test_has_distinct_characters_per_table(self) -> None:
        """No table lists a character twice, so encoding is unambiguous."""
        for table in LOCKING_TABLES.values():
            assert len(set(table)) == 128
        for single_table in SINGLE_TABLES.values():
            assert len(set(single_table.values())) == len(single_table)

    @pytest.mark.parametrize("ch", ["ç", "`", "\x1b", "\t", "😀"])
    def test_agrees_on_what_is_not_gsm7(self, ch: str) -> None:
        """Characters gsmcodecs refuses in the default tables are not GSM-7 here either."""
        with pytest.raises(UnicodeEncodeError):
            ch.encode("gsm23.038")
        assert not is_gsm7(ch)

    def test_has_no_combining_marks(self) -> None:
        """No supported table holds a combining mark, so GSM-7 cuts need no grapheme rules."""
        import unicodedata

        every: set[str] = set().union(*(charset_for(*pair).chars for pair in PAIRS))
        assert not [ch for ch in every if unicodedata.combining(ch)]


@cache
def smspdudecoder(module: str) -> ModuleType:
    """Import a smspdudecoder module (it needs bitstring < 5, pinned in the dev extras)."""
    return importlib.import_module(f"smspdudecoder.{module}")


def deliver_pdu(segment: Segment) -> str:
    """An SMS-DELIVER TPDU carrying one of our segments, for smspdudecoder to read."""
    if segment.data_coding == 0:
        udl = header_septets(len(segment.udh)) + segment.length  # septets, padding excluded
    else:
        udl = len(segment.udh) + len(segment.payload)
    first_octet = 0x44 if segment.udh else 0x04  # SMS-DELIVER, no more messages, UDHI
    return (
        f"00{first_octet:02X}0B919471238596F0"  # no SMSC; sender +49172358690
        f"00{segment.data_coding:02X}99309251619580{udl:02X}"  # PID, DCS, timestamp, UDL
        + (segment.udh + segment.payload).hex().upper()
    )


def header_has_escape(segment: Segment) -> bool:
    """Whether the UDH, read as septets, contains ESC.

    smspdudecoder decodes the header octets as septets before dropping them, so an ESC there
    shifts its text by one: a limit of the oracle, not of the PDU.
    """
    raw = int.from_bytes(segment.udh, "little")
    return any((raw >> (7 * i)) & 0x7F == 0x1B for i in range(header_septets(len(segment.udh))))


class TestPackingAgainstSmspdudecoder:
    @pytest.mark.parametrize(
        "text", ["hello", "1234567", "1234567\r", "12345678", "2 € par mois", "How are you?"]
    )
    def test_packs_single_segments_alike(self, text: str) -> None:
        """A single segment packs as GSM.encode with CR padding does."""
        gsm = smspdudecoder("codecs").GSM
        (segment,) = encode_message(text).segments
        assert segment.payload.hex().upper() == gsm.encode(text, with_padding=True)

    @given(st.text(st.sampled_from(GSM7_CHARS), min_size=1, max_size=150))
    @settings(max_examples=200, deadline=None)
    def test_packs_any_single_segment_alike(self, text: str) -> None:
        """Property: our packing of a short GSM-7 text equals smspdudecoder's."""
        gsm = smspdudecoder("codecs").GSM
        encoded = encode_message(text)
        assume(len(encoded.segments) == 1)
        assert encoded.segments[0].payload.hex().upper() == gsm.encode(text, with_padding=True)

    @given(gsm7_texts() | ucs2_texts(), st.integers(0, 255))
    @settings(max_examples=200, deadline=None)
    def test_reads_our_pdus(self, text: str, reference: int) -> None:
        """Property: smspdudecoder reads each part's UDH and text as we wrote them."""
        read = smspdudecoder("easy").read_incoming_sms
        encoded = encode_message(text, reference=reference)
        total = len(encoded.segments)
        for segment in encoded.segments:
            assume(segment.data_coding == 8 or not header_has_escape(segment))
            sms = read(deliver_pdu(segment))
            # smspdudecoder cuts the decoded characters at UDL, which counts septets, so with
            # ESC pairs in the part it also returns the padding CR that follows the text.
            text, rest = sms["content"][: len(segment.text)], sms["content"][len(segment.text) :]
            assert (text, rest in ("", "\r")) == (segment.text, True)
            if total == 1:
                assert sms["partial"] is False
            else:
                assert sms["partial"] == {
                    "reference": f"{reference}-{total}",
                    "parts_count": total,
                    "part_number": segment.seq,
                }

    @pytest.mark.parametrize("reference", [0, 0x1234, 0xFFFF])
    def test_reads_16_bit_references(self, reference: int) -> None:
        """smspdudecoder reads our IEI 0x08 with its 16-bit reference."""
        read = smspdudecoder("easy").read_incoming_sms
        encoded = encode_message("Ж" * 100, reference=reference, reference_bits=16)
        for segment in encoded.segments:
            sms = read(deliver_pdu(segment))
            assert sms["content"] == segment.text
            assert sms["partial"]["reference"] == f"{reference}-2"
            assert sms["partial"]["part_number"] == segment.seq

    def test_default_charset_matches_its_alphabet(self) -> None:
        """smspdudecoder's alphabet is our default table, ESC position included."""
        gsm = smspdudecoder("codecs").GSM
        assert DEFAULT.locking_table == gsm.ALPHABET
        assert dict(DEFAULT.single_table) == gsm.ALPHABET_EXT
