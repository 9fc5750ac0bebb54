"""National language shift tables: choosing them, signalling them, their capacities."""

from __future__ import annotations

import pytest

from worker.encoding import decode_segment, encode_message, reassemble, summarize
from worker.encoding.national import candidates, resolve_language
from worker.errors import EncodingError, ValidationError


class TestResolveLanguage:
    @pytest.mark.parametrize(
        ("national", "lang"),
        [
            (None, 0),
            ("turkish", 1),
            ("Turkish", 1),
            ("TR", 1),
            (1, 1),
            ("1", 1),
            ("spanish", 2),
            (2, 2),
            ("portuguese", 3),
            ("pt", 3),
            (3, 3),
        ],
    )
    def test_accepts_names_codes_and_ids(self, national: str | int | None, lang: int) -> None:
        """A language is named, given as ISO 639-1 code, or as its TS 23.038 id."""
        assert resolve_language(national) == lang

    @pytest.mark.parametrize("national", ["urdu", 13, 0, "", "klingon", True])
    def test_rejects_languages_without_tables(self, national: str | int) -> None:
        """A language we have no tables for is a validation error on `national`."""
        with pytest.raises(ValidationError) as caught:
            summarize("hi", national=national)
        assert caught.value.field == "national"

    def test_spanish_has_no_locking_table(self) -> None:
        """Spanish offers the default tables and its single shift table only."""
        assert [(c.locking, c.single) for c in candidates(2)] == [(0, 0), (0, 2)]
        assert [(c.locking, c.single) for c in candidates(1)] == [(0, 0), (0, 1), (1, 1)]


class TestChoice:
    @pytest.mark.parametrize(
        ("text", "national", "udh", "lengths"),
        [
            # Single shift only: 4-octet UDH, 155 septets.
            ("Şişli ğüı", "turkish", "03240101", [13]),
            ("ğ" + "a" * 153, "turkish", "03240101", [155]),
            # Both tables when that saves a segment: 7-octet UDH, 152 septets.
            ("ı" * 152, "turkish", "06250101240101", [152]),
            ("días señor", "spanish", "03240102", [11]),
            ("ação", "portuguese", "03240103", [6]),
            ("ã" * 152, "portuguese", "06250103240103", [152]),
        ],
    )
    def test_picks_the_cheapest_tables(
        self, text: str, national: str, udh: str, lengths: list[int]
    ) -> None:
        """The fewest segments wins; on a tie, the fewest UDH octets."""
        encoded = encode_message(text, national=national)
        assert encoded.encoding == "gsm7"
        assert encoded.national == national
        assert [s.udh.hex() for s in encoded.segments] == [udh]
        assert [s.length for s in encoded.segments] == lengths
        assert summarize(text, national=national).segments == len(lengths)

    @pytest.mark.parametrize(
        ("text", "ies", "lengths"),
        [
            ("ğ" + "a" * 154, "240101", [149, 7]),  # concat8 + one IE: 149 septets
            ("ı" * 153, "250101240101", [146, 7]),  # concat8 + both IEs: 146 septets
        ],
    )
    def test_counts_shift_ies_in_every_part(self, text: str, ies: str, lengths: list[int]) -> None:
        """Every part repeats the shift IEs after the concatenation IE."""
        segments = encode_message(text, national="turkish", reference=5).segments
        assert [s.length for s in segments] == lengths
        ie_len = 5 + len(ies) // 2
        assert [s.udh.hex() for s in segments] == [
            f"{ie_len:02x}000305{len(lengths):02x}{seq:02x}{ies}" for seq in (1, 2)
        ]

    @pytest.mark.parametrize(
        ("text", "lengths"), [("ğ" + "a" * 154, [148, 8]), ("ı" * 153, [145, 8])]
    )
    def test_counts_shift_ies_with_a_16_bit_reference(self, text: str, lengths: list[int]) -> None:
        """With a 16-bit reference one IE leaves 148 septets, both 145."""
        segments = encode_message(text, national=1, reference=300, reference_bits=16).segments
        assert [s.length for s in segments] == lengths

    def test_keeps_the_default_tables_when_they_suffice(self) -> None:
        """A text the default alphabet carries gets no shift IE."""
        encoded = encode_message("Merhaba 123", national="turkish")
        assert (encoded.national, encoded.segments[0].udh) == (None, b"")

    def test_is_opt_in(self) -> None:
        """Without `national` a Turkish text goes UCS-2."""
        assert summarize("Şişli").encoding == "ucs2"

    def test_falls_back_to_ucs2(self) -> None:
        """A text no table carries goes UCS-2, naming what the closest tables lack."""
        summary = summarize("Şişli 😀", national="turkish")
        assert (summary.encoding, summary.ucs2_characters, summary.national) == (
            "ucs2",
            ("😀",),
            None,
        )

    def test_needs_one_table_for_the_whole_text(self) -> None:
        """Characters from two locking tables cannot share a message."""
        # 'è' is only in the default locking table; 'ı' only in Turkish tables, 'Ş' needs ESC
        # in the default+Turkish single combination, which carries all three.
        assert summarize("è ı Ş", national="turkish").encoding == "gsm7"
        # '¿' is only in the default locking table; '∞' only in the Portuguese locking table.
        assert summarize("¿ ∞", national="portuguese").ucs2_characters == ("∞",)

    def test_forced_gsm7_names_what_no_table_carries(self) -> None:
        """Forced GSM-7 with national tables reports what the closest tables lack."""
        with pytest.raises(EncodingError) as caught:
            encode_message("Şişli 😀", "GSM7", national="turkish")
        assert caught.value.characters == ("😀",)


class TestRoundTrip:
    @pytest.mark.parametrize(
        ("text", "national"),
        [
            ("Şişli ğüı İstanbul çok güzel", "turkish"),
            ("ı" * 400, "turkish"),
            ("¿Dónde está la estación? ÁÍÓÚ ç €", "spanish"),
            ("A situação é ótima: Ô ê ∞ ª º ` ~ ^", "portuguese"),
        ],
    )
    def test_decodes_with_the_signalled_tables(self, text: str, national: str) -> None:
        """Decoding reads the shift IEs and gets the text back."""
        encoded = encode_message(text, national=national, reference=200)
        decoded = [
            decode_segment(s.udh, s.payload, s.data_coding, septets=s.length)
            for s in encoded.segments
        ]
        assert [d.text for d in decoded] == [s.text for s in encoded.segments]
        assert reassemble(decoded) == text
