"""The `smsq` command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="smsq",
    help="smsq: send SMS and OTP codes at volume.",
    no_args_is_help=True,
    add_completion=False,
)


def main() -> None:
    """Entry point of the `smsq` console script."""
    app()
