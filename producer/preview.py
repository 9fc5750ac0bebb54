"""`smsq preview`: how a text would be encoded and split, segment by segment."""

from __future__ import annotations

import json

import typer

from worker.encoding import EncodedMessage, encode_message
from worker.errors import ValidationError


def preview(
    text: str | None = typer.Argument(
        None, help="The message text; read from stdin when absent (one trailing newline dropped)."
    ),
    coding: str = typer.Option("auto", "--coding", help="auto, GSM7 (0) or UCS2 (UTF-8, 8)."),
    smart: bool = typer.Option(False, "--smart", help="Map look-alike punctuation to GSM-7."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    national: str | None = typer.Option(
        None, "--national", help="Allow national shift tables: turkish, spanish or portuguese."
    ),
) -> None:
    """Show the encoding, segment count and each segment's UDH and payload for a text."""
    if text is None:
        text = typer.get_text_stream("stdin").read()
        text = text.removesuffix("\n").removesuffix("\r")  # the newline `echo` adds
    try:
        # Reference 0: a preview has no recipient whose counter it could advance.
        encoded = encode_message(text, coding, smart=smart, national=national, reference=0)
    except ValidationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(_as_dict(encoded), ensure_ascii=False))
    else:
        _echo_human(encoded)


def _as_dict(encoded: EncodedMessage) -> dict[str, object]:
    return {
        "encoding": encoded.encoding,
        "segments": len(encoded.segments),
        "characters": encoded.characters,
        "ucs2_characters": list(encoded.ucs2_characters),
        "national": encoded.national,
        "text": encoded.text,
        "original_text": encoded.original_text,
        "parts": [
            {
                "seq": s.seq,
                "udh": s.udh.hex(),
                "payload": s.payload.hex(),
                "data_coding": s.data_coding,
                "length": s.length,
                "text": s.text,
            }
            for s in encoded.segments
        ],
    }


def _echo_human(encoded: EncodedMessage) -> None:
    forced = " ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in encoded.ucs2_characters)
    unit = "septets" if encoded.encoding == "gsm7" else "UTF-16 units"
    typer.echo(f"encoding:     {encoded.encoding}")
    typer.echo(f"segments:     {len(encoded.segments)}")
    typer.echo(f"characters:   {encoded.characters}")
    typer.echo(f"forced UCS-2: {forced or '-'}")
    if encoded.national:
        typer.echo(f"national:     {encoded.national}")
    if encoded.text != encoded.original_text:
        typer.echo(f"sent text:    {encoded.text!r}")
    for s in encoded.segments:
        typer.echo(f"segment {s.seq}/{s.total}: {s.length} {unit}, data coding {s.data_coding}")
        typer.echo(f"  udh:     {s.udh.hex() or '-'}")
        typer.echo(f"  payload: {s.payload.hex()}")
        typer.echo(f"  text:    {s.text!r}")
