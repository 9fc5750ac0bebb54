"""The encoding engine's API: coding names, boundaries, errors, UDH, padding, decoding, smart."""

from __future__ import annotations

from typing import Any, cast
from unicodedata import category

import pytest

from worker.encoding import (
    DecodedSegment,
    decode_segment,
    encode_message,
    is_gsm7,
    next_reference,
    normalize_coding,
    reassemble,
    summarize,
)
from worker.encoding.gsm7 import pack
from worker.encoding.smart import SMART_MAP
from worker.errors import EncodingError, TooManySegmentsError, ValidationError

FAMILY = "👨\u200d👩\u200d👧\u200d👦"  # 4 emoji and 3 ZWJ: 11 UTF-16 units, one grapheme


def short(value: object) -> str | None:
    """Test ids for long texts: the start and the length."""
    if isinstance(value, str) and len(value) > 16:
        return f"{value[:4]}...{len(value)}"
    return None


class TestNormalizeCoding:
    @pytest.mark.parametrize(
        ("coding", "expected"),
        [
            (None, "auto"),
            ("auto", "auto"),
            ("AUTO", "auto"),
            ("GSM7", "gsm7"),
            (" gsm7 ", "gsm7"),
            (0, "gsm7"),
            ("0", "gsm7"),
            ("UCS2", "ucs2"),
            ("ucs2", "ucs2"),
            ("UTF-8", "ucs2"),
            ("utf-8", "ucs2"),
            (8, "ucs2"),
            ("8", "ucs2"),
        ],
    )
    def test_accepts_names_and_dcs_values(self, coding: str | int | None, expected: str) -> None:
        """Names are case-insensitive and the DCS values 0 and 8 work as int or text."""
        assert normalize_coding(coding) == expected

    @pytest.mark.parametrize("coding", ["latin1", "", "16", 7, 1, True, False])
    def test_rejects_unknown_codings(self, coding: str | int) -> None:
        """An unknown coding is a validation error on the coding field."""
        with pytest.raises(ValidationError) as caught:
            normalize_coding(coding)
        assert caught.value.field == "coding"

    def test_rejects_unknown_coding_in_encode(self) -> None:
        """encode_message validates the coding too."""
        with pytest.raises(ValidationError, match="unknown coding"):
            encode_message("hi", "ascii")


class TestSegmentBoundaries:
    @pytest.mark.parametrize(
        ("text", "encoding", "lengths"),
        [
            ("a" * 160, "gsm7", [160]),
            ("a" * 161, "gsm7", [153, 8]),
            ("a" * 306, "gsm7", [153, 153]),
            ("a" * 307, "gsm7", [153, 153, 1]),
            ("€" * 80, "gsm7", [160]),
            ("€" * 81, "gsm7", [152, 10]),  # the 77th € would leave its ESC alone in part 1
            ("a" * 152 + "€" + "a" * 10, "gsm7", [152, 12]),
            ("a" * 152 + "[" + "a" * 10, "gsm7", [152, 12]),
            ("a" * 151 + "€" + "a" * 10, "gsm7", [153, 10]),
            ("Ж" * 70, "ucs2", [70]),
            ("Ж" * 71, "ucs2", [67, 4]),
            ("Ж" * 134, "ucs2", [67, 67]),
            ("Ж" * 135, "ucs2", [67, 67, 1]),
            ("😀" * 35, "ucs2", [70]),
            ("Ж" * 66 + "😀" + "Ж" * 10, "ucs2", [66, 12]),  # the emoji would take units 67-68
            ("Ж" * 65 + "😀" + "Ж" * 10, "ucs2", [67, 10]),
            ("Ж" * 60 + FAMILY + "Ж" * 10, "ucs2", [60, 21]),  # the family moves whole
            ("Ж" * 56 + FAMILY + "Ж" * 10, "ucs2", [67, 10]),
            ("Ж" * 63 + "🇫🇷" + "Ж" * 10, "ucs2", [67, 10]),
            ("Ж" * 64 + "🇫🇷" + "Ж" * 10, "ucs2", [64, 14]),
            ("Ж" * 64 + "👍🏽" + "Ж" * 10, "ucs2", [64, 14]),
            ("Ж" * 65 + "1\ufe0f\u20e3" + "Ж" * 10, "ucs2", [65, 13]),
            ("Ж" * 66 + "e\u0301" + "Ж" * 10, "ucs2", [66, 12]),
        ],
        ids=short,
    )
    def test_splits_at_the_documented_capacities(
        self, text: str, encoding: str, lengths: list[int]
    ) -> None:
        """Parts hold 160/153 septets or 70/67 units; escape pairs and clusters stay whole."""
        encoded = encode_message(text)
        assert encoded.encoding == encoding
        assert [s.length for s in encoded.segments] == lengths
        assert "".join(s.text for s in encoded.segments) == text
        assert summarize(text).segments == len(lengths)

    @pytest.mark.parametrize(
        ("text", "lengths"),
        [
            ("a" * 160, [160]),
            ("a" * 305, [152, 152, 1]),
            ("Ж" * 70, [70]),
            ("Ж" * 133, [66, 66, 1]),
        ],
    )
    def test_uses_152_and_66_with_a_16_bit_reference(self, text: str, lengths: list[int]) -> None:
        """The 7-octet UDH of a 16-bit reference leaves 152 septets or 66 units per part."""
        encoded = encode_message(text, reference=0x1234, reference_bits=16)
        assert [s.length for s in encoded.segments] == lengths
        assert summarize(text, reference_bits=16).segments == len(lengths)

    def test_allows_255_segments(self) -> None:
        """255 full parts is the most a message can have."""
        assert summarize("a" * (255 * 153)).segments == 255
        assert len(encode_message("a" * (255 * 153), reference=9).segments) == 255

    @pytest.mark.parametrize(
        ("text", "segments"), [("a" * (255 * 153 + 1), 256), ("Ж" * (255 * 67 + 1), 256)]
    )
    def test_refuses_256_segments(self, text: str, segments: int) -> None:
        """One more character than 255 parts hold is too many segments."""
        with pytest.raises(TooManySegmentsError) as caught:
            summarize(text)
        assert (caught.value.segments, caught.value.limit) == (segments, 255)

    @pytest.mark.parametrize(
        ("text", "limit", "segments"),
        [("a" * 161, 1, 2), ("a" * 307, 2, 3), ("€" * 81, 1, 2), ("Ж" * 71, 1, 2)],
    )
    def test_honours_max_segments(self, text: str, limit: int, segments: int) -> None:
        """A text needing more parts than max_segments is refused with the count."""
        for call in (summarize, encode_message):
            with pytest.raises(TooManySegmentsError) as caught:
                call(text, max_segments=limit)
            assert (caught.value.segments, caught.value.limit) == (segments, limit)

    def test_clamps_max_segments_to_255(self) -> None:
        """A larger max_segments still stops at 255, the protocol's limit."""
        with pytest.raises(TooManySegmentsError) as caught:
            summarize("a" * (255 * 153 + 1), max_segments=1000)
        assert caught.value.limit == 255

    @pytest.mark.parametrize("limit", [0, -1, True])
    def test_rejects_a_non_positive_max_segments(self, limit: int) -> None:
        """max_segments must be a positive integer."""
        with pytest.raises(ValidationError) as caught:
            summarize("hi", max_segments=limit)
        assert caught.value.field == "max_segments"


class TestEncodingChoice:
    @pytest.mark.parametrize(
        ("text", "encoding", "forced_by"),
        [
            ("Your code is 123456", "gsm7", ()),
            ("Prix: 5€ {ok} [x] ~^|\\", "gsm7", ()),
            ("Ça va? àéùìò ÄÖÑÜ ß", "gsm7", ()),
            ("ça va", "ucs2", ("ç",)),
            ("use `ls`", "ucs2", ("`",)),
            ("😀 and ç and 😀 and `", "ucs2", ("😀", "ç", "`")),
            ("tab\there", "ucs2", ("\t",)),
            ("Привет", "ucs2", ("П", "р", "и", "в", "е", "т")),
        ],
    )
    def test_picks_gsm7_when_every_character_fits(
        self, text: str, encoding: str, forced_by: tuple[str, ...]
    ) -> None:
        """Auto is GSM-7 unless a character is missing; those are listed in order, once."""
        summary = summarize(text)
        assert (summary.encoding, summary.ucs2_characters) == (encoding, forced_by)
        encoded = encode_message(text)
        assert (encoded.encoding, encoded.ucs2_characters) == (encoding, forced_by)
        assert {s.data_coding for s in encoded.segments} == {0 if encoding == "gsm7" else 8}

    @pytest.mark.parametrize(
        ("text", "characters"), [("hello", 5), ("👍🏽", 2), ("e\u0301", 2), (FAMILY, 7)]
    )
    def test_counts_code_points(self, text: str, characters: int) -> None:
        """`characters` is the number of code points of the text sent."""
        assert summarize(text).characters == characters
        assert encode_message(text).characters == characters

    def test_forces_ucs2(self) -> None:
        """Forced UCS-2 sends GSM-able text as UTF-16 and names no culprit."""
        encoded = encode_message("hello", "UCS2")
        assert encoded.encoding == "ucs2"
        assert encoded.ucs2_characters == ()
        assert encoded.segments[0].payload == "hello".encode("utf-16-be")

    def test_forced_gsm7_names_every_offending_character(self) -> None:
        """Forced GSM-7 refuses text it cannot carry and never substitutes '?'."""
        with pytest.raises(EncodingError) as caught:
            encode_message("ça 😀 ç `", "GSM7")
        assert caught.value.characters == ("ç", "😀", "`")
        assert caught.value.field == "content"

    @pytest.mark.parametrize("coding", ["GSM7", 0, "0"])
    def test_forced_gsm7_encodes_what_fits(self, coding: str | int) -> None:
        """Forced GSM-7 of GSM text is the same as auto."""
        assert encode_message("a€b", coding) == encode_message("a€b")

    def test_rejects_empty_text(self) -> None:
        """Empty text is an encoding error with code 'empty'."""
        with pytest.raises(EncodingError) as caught:
            summarize("")
        assert caught.value.code == "empty"

    @pytest.mark.parametrize("coding", ["auto", "GSM7", "UCS2"])
    def test_rejects_a_raw_escape(self, coding: str) -> None:
        """A raw U+001B is refused under every coding: it would change the next character."""
        with pytest.raises(EncodingError) as caught:
            encode_message("a\x1b(b", coding)
        assert (caught.value.code, caught.value.characters) == ("escape", ("\x1b",))

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("hello", True),
            ("€[]{}", True),
            ("", True),
            ("ç", False),
            ("`", False),
            ("😀", False),
            ("\x1b", False),
            ("\t", False),
            ("Привет", False),
        ],
    )
    def test_is_gsm7(self, text: str, expected: bool) -> None:
        """is_gsm7 answers for the default alphabet and extension table."""
        assert is_gsm7(text) is expected


class TestSegments:
    def test_packs_a_single_segment(self) -> None:
        """'hello' is five septets in five octets, with no UDH."""
        (segment,) = encode_message("hello").segments
        assert (segment.udh, segment.payload.hex()) == (b"", "e8329bfd06")
        assert (segment.seq, segment.total, segment.data_coding) == (1, 1, 0)

    def test_writes_the_8_bit_concatenation_ie(self) -> None:
        """Each part carries 05 00 03 ref total seq."""
        segments = encode_message("a" * 307, reference=0xAB).segments
        assert [s.udh.hex() for s in segments] == [f"050003ab03{seq:02x}" for seq in (1, 2, 3)]
        assert [(s.seq, s.total) for s in segments] == [(1, 3), (2, 3), (3, 3)]

    def test_writes_the_16_bit_concatenation_ie(self) -> None:
        """With a 16-bit reference each part carries 06 08 04 refhi reflo total seq."""
        segments = encode_message("Ж" * 100, reference=0x1234, reference_bits=16).segments
        assert [s.udh.hex() for s in segments] == ["06080412340201", "06080412340202"]

    def test_aligns_text_after_the_udh_with_fill_bits(self) -> None:
        """After a 6-octet UDH one fill bit puts the first septet on a septet boundary."""
        second = encode_message("a" * 153 + "b" * 10, reference=1).segments[1]
        assert second.payload == pack(b"b" * 10, 1)
        assert second.payload[0] == (ord("b") << 1) & 0xFF

    def test_keeps_a_single_segment_reference_free(self) -> None:
        """A message of one segment has no concatenation IE whatever the reference."""
        assert encode_message("hi", reference=77).segments[0].udh == b""

    @pytest.mark.parametrize(("reference", "bits"), [(256, 8), (-1, 8), (65536, 16)])
    def test_rejects_a_reference_out_of_range(self, reference: int, bits: int) -> None:
        """The reference must fit its 8 or 16 bits."""
        with pytest.raises(ValueError, match="does not fit"):
            encode_message("hi", reference=reference, reference_bits=cast(Any, bits))

    def test_rejects_other_reference_sizes(self) -> None:
        """Only 8- and 16-bit references exist."""
        with pytest.raises(ValueError, match="reference_bits"):
            summarize("hi", reference_bits=cast(Any, 12))

    def test_encodes_ucs2_big_endian_with_surrogate_pairs(self) -> None:
        """UCS-2 payloads are UTF-16 BE; an emoji is a surrogate pair."""
        (segment,) = encode_message("a😀").segments
        assert segment.payload.hex() == "0061d83dde00"
        assert segment.length == 3


class TestCrPadding:
    @pytest.mark.parametrize(
        ("text", "payload"),
        [
            ("1234567", "31d98c56b3dd1a"),  # 7 spare bits: CR instead of a phantom '@'
            ("123456", "31d98c56b301"),
            ("12345678", "31d98c56b3dd70"),
        ],
    )
    def test_fills_seven_spare_bits_with_cr(self, text: str, payload: str) -> None:
        """Seven spare bits in the last octet carry a CR (TS 23.038 §6.1.2.3.1)."""
        assert encode_message(text).segments[0].payload.hex() == payload

    def test_doubles_a_final_cr_on_an_octet_boundary(self) -> None:
        """A wanted CR ending on an octet boundary is followed by a second CR."""
        (segment,) = encode_message("1234567\r").segments
        assert len(segment.payload) == 8  # nine septets
        assert segment.length == 8

    @pytest.mark.parametrize(
        "text",
        ["1234567", "1234567\r", "123456\r", "abc\r\r", "a" * 159 + "\r\r", "a" * 152 + "\r"],
    )
    def test_strips_the_padding_when_decoding(self, text: str) -> None:
        """Decoding without the septet count removes exactly the padding."""
        for segment in encode_message(text, reference=3).segments:
            decoded = decode_segment(segment.udh, segment.payload, segment.data_coding)
            assert decoded.text == segment.text

    def test_loses_the_cr_ending_a_full_segment_without_the_count(self) -> None:
        """A full segment has no room for a second CR: only the septet count keeps its CR."""
        (segment,) = encode_message("a" * 159 + "\r").segments
        args = (segment.udh, segment.payload, segment.data_coding)
        assert decode_segment(*args).text == "a" * 159
        assert decode_segment(*args, septets=segment.length).text == "a" * 159 + "\r"


class TestDecoding:
    def test_reads_back_a_concatenated_message(self) -> None:
        """Each part decodes to its text, reference, total and sequence number."""
        text = "Hello [world] " * 20
        encoded = encode_message(text, reference=42)
        decoded = [decode_segment(s.udh, s.payload, s.data_coding) for s in encoded.segments]
        assert [(d.reference, d.total, d.seq) for d in decoded] == [(42, 3, n) for n in (1, 2, 3)]
        assert reassemble(decoded[::-1]) == text

    def test_reads_a_single_segment_without_reference(self) -> None:
        """A single segment has no reference and is part 1 of 1."""
        (segment,) = encode_message("hello").segments
        decoded = decode_segment(segment.udh, segment.payload, 0)
        assert decoded == DecodedSegment("hello", None, 1, 1)

    @pytest.mark.parametrize(
        ("septets", "text"),
        [(b"\x1b\x41", "A"), (b"\x1b\x1b", " "), (b"\x1b\x65", "€"), (b"\x1b\x0a", "\f")],
    )
    def test_reads_escape_sequences_as_a_handset(self, septets: bytes, text: str) -> None:
        """ESC + a code without an extension shows the base character; ESC ESC a space."""
        assert decode_segment(b"", pack(septets, 0), 0).text == text

    def test_rejects_a_lone_final_escape(self) -> None:
        """Septets ending in ESC are malformed."""
        with pytest.raises(ValueError, match="lone escape"):
            decode_segment(b"", pack(b"a\x1b", 0), 0, septets=2)

    @pytest.mark.parametrize(
        ("udh", "message"),
        [
            (b"\x06\x00\x03\x01\x02\x01", "UDHL"),
            (b"\x05\x00\x04\x01\x02\x01", "runs past"),
            (b"\x04\x00\x02\x01\x02", "has 2 octets"),
        ],
    )
    def test_rejects_a_malformed_udh(self, udh: bytes, message: str) -> None:
        """A UDH whose lengths disagree raises ValueError."""
        with pytest.raises(ValueError, match=message):
            decode_segment(udh, b"", 8)

    def test_skips_unknown_information_elements(self) -> None:
        """An IE it does not know (here an application port) is skipped."""
        udh = bytes.fromhex("0b" + "0504" + "0b840000" + "0003" + "070201")
        decoded = decode_segment(udh, "hi".encode("utf-16-be"), 8)
        assert (decoded.text, decoded.reference, decoded.seq) == ("hi", 7, 1)

    def test_ignores_shift_tables_it_lacks(self) -> None:
        """A shift IE for a language without tables (Urdu) decodes with the default ones."""
        decoded = decode_segment(bytes.fromhex("0325010d"), pack(b"abc", 3), 0)
        assert decoded.text == "abc"

    @pytest.mark.parametrize(("payload", "coding"), [(b"\x00a\x00", 8), (b"ab", 4)])
    def test_rejects_bad_payloads(self, payload: bytes, coding: int) -> None:
        """An odd UCS-2 payload or an unknown data coding raises ValueError."""
        with pytest.raises(ValueError, match=r"odd length|unsupported data coding"):
            decode_segment(b"", payload, coding)

    def test_rejects_a_septet_count_beyond_the_payload(self) -> None:
        """The septet count cannot exceed what the payload holds."""
        with pytest.raises(ValueError, match="holds 5 septets"):
            decode_segment(b"", bytes.fromhex("e8329bfd06"), 0, septets=6)

    @pytest.mark.parametrize(
        ("parts", "message"),
        [
            ([], "no segments"),
            ([DecodedSegment("a", 1, 2, 1)], "expected parts"),
            ([DecodedSegment("a", 1, 2, 1), DecodedSegment("b", 2, 2, 2)], "different"),
            ([DecodedSegment("a", 1, 2, 1), DecodedSegment("b", 1, 3, 2)], "different"),
            ([DecodedSegment("a", 1, 2, 1), DecodedSegment("b", 1, 2, 1)], "expected parts"),
        ],
    )
    def test_reassemble_refuses_incomplete_sets(
        self, parts: list[DecodedSegment], message: str
    ) -> None:
        """Missing, duplicated or foreign parts raise ValueError."""
        with pytest.raises(ValueError, match=message):
            reassemble(parts)


class TestNextReference:
    @pytest.mark.parametrize(
        ("previous", "bits", "expected"),
        [(0, 8, 1), (254, 8, 255), (255, 8, 0), (255, 16, 256), (65535, 16, 0)],
    )
    def test_advances_and_wraps(self, previous: int, bits: int, expected: int) -> None:
        """The next reference is one more, wrapping within its bits."""
        assert next_reference(previous, cast(Any, bits)) == expected

    def test_rejects_other_sizes(self) -> None:
        """Only 8- and 16-bit references exist."""
        with pytest.raises(ValueError, match="8 or 16"):
            next_reference(1, cast(Any, 32))


class TestSmartEncoding:
    @pytest.mark.parametrize(
        ("text", "sent"),
        [
            ("“Hello” — it’s…", '"Hello" - it\'s...'),
            ("‹a› «b» „c‟", '<a> "b" "c"'),
            ("1\u00a0000\u202fkm\u2009ok\u3000!", "1 000 km ok !"),
            ("ＡＢＣ１２３！", "ABC123!"),
            ("x – y ‐ z − w", "x - y - z - w"),
            ("`code` ´", "'code' '"),
        ],
    )
    def test_maps_look_alikes_to_gsm7(self, text: str, sent: str) -> None:
        """Look-alike punctuation becomes GSM-7; the original text is kept beside it."""
        encoded = encode_message(text, smart=True)
        assert (encoded.encoding, encoded.text, encoded.original_text) == ("gsm7", sent, text)
        assert summarize(text, smart=True).characters == len(sent)

    def test_is_off_by_default(self) -> None:
        """Without smart a curly quote forces UCS-2."""
        assert encode_message("it’s").encoding == "ucs2"

    def test_keeps_the_original_when_gsm7_stays_out_of_reach(self) -> None:
        """If mapping cannot reach GSM-7 the original text goes out in UCS-2."""
        encoded = encode_message("“Hi” 😀", smart=True)
        assert (encoded.encoding, encoded.text) == ("ucs2", "“Hi” 😀")
        assert encoded.ucs2_characters == ("“", "”", "😀")

    def test_leaves_tab_alone(self) -> None:
        """TAB is not turned into spaces (Twilio's map makes it seven)."""
        assert encode_message("a\tb", smart=True).text == "a\tb"

    def test_forced_gsm7_names_what_mapping_cannot_fix(self) -> None:
        """Under forced GSM-7 only the unmappable characters are reported."""
        with pytest.raises(EncodingError) as caught:
            encode_message("“Hi” 😀", "GSM7", smart=True)
        assert caught.value.characters == ("😀",)

    def test_does_not_map_under_forced_ucs2(self) -> None:
        """Forced UCS-2 sends the text as written."""
        assert encode_message("“Hi”", "UCS2", smart=True).text == "“Hi”"

    def test_maps_only_to_gsm7_and_never_letters(self) -> None:
        """Every replacement is GSM-7; no letter is transliterated but fullwidth ASCII."""
        assert all(is_gsm7(value) for value in SMART_MAP.values())
        letters = [chr(key) for key in SMART_MAP if category(chr(key)) in ("Lu", "Ll", "Lo")]
        assert all("\uff01" <= ch <= "\uff5e" for ch in letters)
