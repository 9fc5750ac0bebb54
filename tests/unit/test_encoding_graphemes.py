"""The approximate grapheme cluster splitter that keeps user-perceived characters together."""

from __future__ import annotations

import pytest

from worker.encoding.graphemes import clusters, inner_positions

FAMILY = "👨\u200d👩\u200d👧\u200d👦"
SCOTLAND = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"


class TestClusters:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", []),
            ("abc", ["a", "b", "c"]),
            ("e\u0301a", ["e\u0301", "a"]),  # combining acute accent
            ("a\u0308\u0301b", ["a\u0308\u0301", "b"]),  # two marks
            (FAMILY + "x", [FAMILY, "x"]),  # ZWJ sequence
            ("👍🏽👍", ["👍🏽", "👍"]),  # skin-tone modifier
            ("🇫🇷🇩🇪🇮", ["🇫🇷", "🇩🇪", "🇮"]),  # regional indicators pair from the left
            ("1\ufe0f\u20e3#", ["1\ufe0f\u20e3", "#"]),  # keycap: VS16 + U+20E3
            ("❤\ufe0f!", ["❤\ufe0f", "!"]),  # VS16
            (SCOTLAND + "a", [SCOTLAND, "a"]),  # tag sequence
            ("\u0915\u094d\u0937", ["\u0915\u094d", "\u0937"]),  # virama: GB9c not covered
            ("\u0915\u093f", ["\u0915\u093f"]),  # spacing mark (Mc)
            ("ب\u064e", ["ب\u064e"]),  # Arabic fatha
            ("\n\u0301", ["\n", "\u0301"]),  # no mark attaches to a control
            ("😀😀", ["😀", "😀"]),
        ],
    )
    def test_splits_into_user_perceived_characters(self, text: str, expected: list[str]) -> None:
        """Marks, modifiers, ZWJ sequences, flags, keycaps and tags stay with their base."""
        assert clusters(text) == expected

    def test_finds_nothing_to_join_below_combining_marks(self) -> None:
        """Text below U+0300 has no cluster longer than one code point."""
        assert inner_positions("Hello, wörld! ÿ") == set()

    def test_reports_inner_offsets(self) -> None:
        """The inner offsets are where a cut would split a cluster."""
        assert inner_positions("a" + FAMILY) == set(range(2, 1 + len(FAMILY)))
