"""Properties of the engine over generated texts: round trip, capacity, atomic units, minimality."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import LANGUAGES, any_texts, gsm7_texts, national_texts, ucs2_texts
from worker.encoding import (
    EncodedMessage,
    decode_segment,
    encode_message,
    reassemble,
    summarize,
)
from worker.encoding.graphemes import clusters
from worker.encoding.gsm7 import header_septets, unpack
from worker.encoding.national import charset_for

FAST = settings(max_examples=200, deadline=None)
bits = st.sampled_from([8, 16])
languages = st.sampled_from([None, *LANGUAGES])


def encode(text: str, reference_bits: int, national: int | None = None) -> EncodedMessage:
    return encode_message(
        text, national=national, reference=201, reference_bits=cast(Any, reference_bits)
    )


def gsm7_capacity(udh: int) -> int:
    return (140 - udh) * 8 // 7


def greedy_count(costs: list[int], single: int, concat: int) -> int:
    """The fewest parts for atoms of the given costs, packed in order."""
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > concat:
            parts, used = parts + 1, 0
        used += cost
    return parts


class TestRoundTrip:
    @given(any_texts(), bits, languages)
    @FAST
    def test_reassembles_the_text(self, text: str, reference_bits: int, lang: int | None) -> None:
        """reassemble(decode(encode(x))) == x, with the septet count as TP-UDL carries it."""
        encoded = encode(text, reference_bits, lang)
        decoded = [
            decode_segment(s.udh, s.payload, s.data_coding, septets=s.length)
            for s in encoded.segments
        ]
        assert [d.text for d in decoded] == [s.text for s in encoded.segments]
        assert reassemble(decoded) == text

    @given(any_texts(), bits, languages)
    @FAST
    def test_decodes_from_octets_alone(
        self, text: str, reference_bits: int, lang: int | None
    ) -> None:
        """Without the septet count the CR padding goes; at worst a final wanted CR goes too."""
        for segment in encode(text, reference_bits, lang).segments:
            got = decode_segment(segment.udh, segment.payload, segment.data_coding).text
            assert got == segment.text or (segment.text.endswith("\r") and got == segment.text[:-1])

    @given(any_texts().filter(lambda t: "\r" not in t), bits)
    @FAST
    def test_round_trips_from_octets_without_cr(self, text: str, reference_bits: int) -> None:
        """A text without CR round-trips exactly from the octets alone."""
        encoded = encode(text, reference_bits)
        decoded = [decode_segment(s.udh, s.payload, s.data_coding) for s in encoded.segments]
        assert reassemble(decoded) == text

    @given(any_texts(), bits, languages)
    @FAST
    def test_summary_matches_the_encoding(
        self, text: str, reference_bits: int, lang: int | None
    ) -> None:
        """summarize gives the counts encode_message gives."""
        summary = summarize(text, national=lang, reference_bits=cast(Any, reference_bits))
        encoded = encode(text, reference_bits, lang)
        assert (summary.encoding, summary.segments, summary.characters) == (
            encoded.encoding,
            len(encoded.segments),
            encoded.characters,
        )
        assert (summary.ucs2_characters, summary.national) == (
            encoded.ucs2_characters,
            encoded.national,
        )


class TestSegmentShape:
    @given(any_texts(), bits, languages)
    @FAST
    def test_fits_every_segment(self, text: str, reference_bits: int, lang: int | None) -> None:
        """Every part fits 140 octets and its UDH leaves room for its length."""
        for segment in encode(text, reference_bits, lang).segments:
            assert len(segment.udh) + len(segment.payload) <= 140
            if segment.data_coding == 0:
                assert segment.length <= gsm7_capacity(len(segment.udh))
            else:
                assert segment.length <= (140 - len(segment.udh)) // 2
                assert len(segment.payload) == 2 * segment.length

    @given(gsm7_texts() | national_texts(), bits, languages)
    @FAST
    def test_never_ends_a_part_in_a_lone_escape(
        self, text: str, reference_bits: int, lang: int | None
    ) -> None:
        """No GSM-7 part ends with the first half of an escape pair."""
        for segment in encode(text, reference_bits, lang).segments:
            if segment.data_coding == 0:
                fill = 7 * header_septets(len(segment.udh)) - 8 * len(segment.udh)
                septets = unpack(segment.payload, fill, segment.length)
                assert septets[-1:] != b"\x1b"
                # Each ESC opens a pair closed in the same part: one character per pair.
                assert septets.count(0x1B) == len(septets) - len(segment.text)

    @given(ucs2_texts(), bits)
    @FAST
    def test_never_ends_a_part_in_a_high_surrogate(self, text: str, reference_bits: int) -> None:
        """No UCS-2 part ends with the first half of a surrogate pair."""
        for segment in encode(text, reference_bits).segments:
            if segment.data_coding == 8:
                assert not 0xD800 <= int.from_bytes(segment.payload[-2:], "big") <= 0xDBFF

    @given(ucs2_texts(), bits)
    @FAST
    def test_keeps_fitting_clusters_whole(self, text: str, reference_bits: int) -> None:
        """A cut falls inside a grapheme cluster only if that cluster exceeds a segment."""
        encoded = encode(text, reference_bits)
        if encoded.encoding != "ucs2":
            return
        capacity = 67 if reference_bits == 8 else 66
        inside: dict[int, str] = {}  # offsets strictly inside a cluster -> that cluster
        offset = 0
        for cluster in clusters(text):
            inside.update(dict.fromkeys(range(offset + 1, offset + len(cluster)), cluster))
            offset += len(cluster)
        cut = 0
        for segment in encoded.segments[:-1]:
            cut += len(segment.text)
            if cut in inside:
                assert len(inside[cut].encode("utf-16-le")) // 2 > capacity


class TestMinimality:
    @given(gsm7_texts() | national_texts(), bits, languages)
    @FAST
    def test_uses_the_fewest_gsm7_segments(
        self, text: str, reference_bits: int, lang: int | None
    ) -> None:
        """The count is a plain greedy count over characters of 1 or 2 septets."""
        encoded = encode(text, reference_bits, lang)
        if encoded.encoding != "gsm7":
            return
        first = encoded.segments[0]
        charset = charset_for(*_shift_ids(first.udh))
        costs = [1 if ch in charset.basic else 2 for ch in text]
        ies = 3 * ((charset.locking > 0) + (charset.single > 0))
        single = gsm7_capacity(ies + 1 if ies else 0)
        concat = gsm7_capacity(ies + (5 if reference_bits == 8 else 6) + 1)
        assert len(encoded.segments) == greedy_count(costs, single, concat)

    @given(ucs2_texts(), bits)
    @FAST
    def test_uses_the_fewest_ucs2_segments(self, text: str, reference_bits: int) -> None:
        """The count is a greedy count over clusters, or code points of oversized clusters."""
        encoded = encode(text, reference_bits)
        if encoded.encoding != "ucs2":
            return
        concat = 67 if reference_bits == 8 else 66
        costs: list[int] = []
        for cluster in clusters(text):
            units = len(cluster.encode("utf-16-le")) // 2
            costs += [units] if units <= concat else [1 + (ch > "\uffff") for ch in cluster]
        assert len(encoded.segments) == greedy_count(costs, 70, concat)


def _shift_ids(udh: bytes) -> tuple[int, int]:
    """(locking, single) language ids from a UDH, 0 where absent."""
    ids = {0x25: 0, 0x24: 0}
    pos = 1
    while pos < len(udh):
        if udh[pos] in ids:
            ids[udh[pos]] = udh[pos + 2]
        pos += 2 + udh[pos + 1]
    return ids[0x25], ids[0x24]
