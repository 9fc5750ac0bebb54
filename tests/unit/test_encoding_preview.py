"""`smsq preview`: human and JSON output, stdin, and errors."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from producer.preview import preview

app = typer.Typer()
app.command("preview")(preview)


@app.command("version")
def _version() -> None:
    """A second command, so that `preview` is addressed by name as in the real CLI."""


runner = CliRunner()


def run_json(*args: str, stdin: str | None = None) -> dict[str, object]:
    result = runner.invoke(app, ["preview", "--json", *args], input=stdin)
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


class TestPreview:
    def test_prints_a_json_summary_and_parts(self) -> None:
        """--json gives encoding, counts, culprits and each part's hex UDH and payload."""
        assert run_json("hello") == {
            "encoding": "gsm7",
            "segments": 1,
            "characters": 5,
            "ucs2_characters": [],
            "national": None,
            "text": "hello",
            "original_text": "hello",
            "parts": [
                {
                    "seq": 1,
                    "udh": "",
                    "payload": "e8329bfd06",
                    "data_coding": 0,
                    "length": 5,
                    "text": "hello",
                }
            ],
        }

    def test_shows_concatenated_parts(self) -> None:
        """A long text lists each part with its concatenation IE (reference 0)."""
        out = run_json("a" * 161)
        parts = out["parts"]
        assert isinstance(parts, list)
        assert [p["udh"] for p in parts] == ["050003000201", "050003000202"]

    def test_names_what_forces_ucs2(self) -> None:
        """The characters that forced UCS-2 are listed."""
        out = run_json("ça 😀")
        assert (out["encoding"], out["ucs2_characters"]) == ("ucs2", ["ç", "😀"])

    @pytest.mark.parametrize(
        ("args", "sent"),
        [(["--smart", "“hi”"], '"hi"'), (["--national", "turkish", "Şişli"], "Şişli")],
    )
    def test_passes_options_through(self, args: list[str], sent: str) -> None:
        """--smart and --national reach the engine."""
        out = run_json(*args)
        assert (out["encoding"], out["text"]) == ("gsm7", sent)

    def test_reads_stdin_without_its_trailing_newline(self) -> None:
        """Without an argument the text comes from stdin, minus echo's newline."""
        assert run_json(stdin="hello\n")["characters"] == 5

    def test_prints_a_human_summary(self) -> None:
        """The default output names encoding, counts and each part."""
        result = runner.invoke(app, ["preview", "Prix: 5€"])
        assert result.exit_code == 0
        for line in ("encoding:     gsm7", "segments:     1", "characters:   8", "payload:"):
            assert line in result.stdout

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--coding", "GSM7", "ça"], "cannot be sent as GSM-7"),
            (["--coding", "latin1", "hi"], "unknown coding"),
            (["--national", "urdu", "hi"], "unknown national language"),
            (["a\x1bb"], "raw ESC"),
        ],
    )
    def test_fails_with_one_line_on_stderr(self, args: list[str], message: str) -> None:
        """Errors exit 1 with a single line on stderr and nothing on stdout."""
        result = runner.invoke(app, ["preview", *args])
        assert result.exit_code == 1
        assert result.stdout == ""
        assert message in result.stderr
        assert result.stderr.count("\n") == 1

    def test_fails_on_too_many_segments(self) -> None:
        """A text beyond 255 parts is refused."""
        result = runner.invoke(app, ["preview"], input="a" * 40000)
        assert result.exit_code == 1
        assert "more than the limit of 255" in result.stderr
