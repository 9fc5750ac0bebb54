"""CLI commands that talk to a running smsq API: `smsq send`, `smsq batch send|status`.

They call the API given (`--api-url`, `--key` / `SMSQ_API_KEY`), else the running `smsq up`'s,
with its development key (`producer.instance`)."""

from __future__ import annotations

import csv
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.progress import Progress

from producer.instance import api_access
from worker.settings import get_settings

CSV_CHUNK = 1000

batch_app = typer.Typer(
    help="Campaigns: send a CSV, follow and inspect batches.", no_args_is_help=True
)

ApiUrl = Annotated[str | None, typer.Option("--api-url", help="Default: the running smsq up's API")]
ApiKey = Annotated[
    str | None,
    typer.Option("--key", help="Default: SMSQ_API_KEY, else the running smsq up's dev key"),
]


def _client(api_url: str | None, key: str | None) -> httpx.Client:
    settings = get_settings()
    url, key = api_access(settings, api_url, key or settings.api_key.get_secret_value() or None)
    headers = {"authorization": f"Bearer {key}"}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60)


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            detail = f"{error['message']}" + (
                f" (field {error['field']})" if error.get("field") else ""
            )
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200]
        typer.echo(f"smsq: {response.status_code}: {detail}", err=True)
        raise typer.Exit(1)
    result: dict[str, Any] = response.json()
    return result


def send(
    to: Annotated[str, typer.Argument(help="The recipient, E.164 (+14155552671)")],
    text: Annotated[str, typer.Argument(help="The message text")],
    sender: Annotated[str | None, typer.Option("--from", help="Sender id or number")] = None,
    dlr_url: Annotated[
        str | None, typer.Option("--dlr-url", help="Where receipts go (asks for them)")
    ] = None,
    dlr_level: Annotated[
        int | None, typer.Option("--dlr-level", help="1 carrier, 2 handset, 3 both")
    ] = None,
    dlr_method: Annotated[str | None, typer.Option("--dlr-method", help="POST or GET")] = None,
    priority: Annotated[str, typer.Option(help="otp, normal or bulk")] = "normal",
    coding: Annotated[str, typer.Option(help="auto, GSM7, UCS2")] = "auto",
    send_at: Annotated[str | None, typer.Option("--send-at", help="ISO 8601")] = None,
    key: ApiKey = None,
    api_url: ApiUrl = None,
) -> None:
    """Send one message through the API; prints its id, encoding and segments."""
    body: dict[str, Any] = {"to": to, "content": text, "priority": priority, "coding": coding}
    options = {"from": sender, "send_at": send_at, "dlr-url": dlr_url, "dlr-level": dlr_level,
               "dlr-method": dlr_method}  # fmt: skip
    body |= {name: value for name, value in options.items() if value is not None}
    if dlr_url is not None:
        body["dlr"] = True
    with _client(api_url, key) as client:
        reply = _check(client.post("/sms/send", json=body))
    typer.echo(orjson.dumps(reply).decode())


def read_recipients(path: Path) -> Iterator[dict[str, Any]]:
    """CSV rows as recipients: the `to` column, every other column a template variable."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "to" not in reader.fieldnames:
            raise typer.BadParameter("the CSV needs a header with a `to` column", param_hint="FILE")
        for row in reader:
            to = row.pop("to") or ""
            yield {"to": to, "vars": {k: v for k, v in row.items() if k and v is not None}}


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CSV_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@batch_app.command("send")
def batch_send(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a `to` column")
    ],
    template: Annotated[str, typer.Option("--template", help="Text with {column} variables")],
    sender: Annotated[str | None, typer.Option("--from")] = None,
    priority: Annotated[str, typer.Option()] = "bulk",
    follow: Annotated[bool, typer.Option("--follow", help="Show delivery progress")] = False,
    key: ApiKey = None,
    api_url: ApiUrl = None,
) -> None:
    """Send a templated campaign from a CSV, in chunks, with a progress bar."""
    batch_id = uuid.uuid4().hex
    total = sum(1 for _ in read_recipients(file))
    accepted = rejected = 0
    with _client(api_url, key) as client, Progress() as progress:
        task = progress.add_task("ingest", total=total)
        for chunk in _chunks(read_recipients(file)):
            body: dict[str, Any] = {
                "batch_id": batch_id,
                "content": template,
                "recipients": chunk,
                "priority": priority,
            }
            if sender is not None:
                body["from"] = sender
            reply = _check(client.post("/sms/batch", json=body))
            accepted += reply["accepted"]
            rejected += len(reply["rejected"])
            for item in reply["rejected"][:5]:
                progress.console.print(f"rejected row {item['index']}: {item['error']['message']}")
            progress.advance(task, len(chunk))
        if follow:
            _follow(client, progress, batch_id, accepted)
    typer.echo(f"batch {batch_id}: {accepted} accepted, {rejected} rejected")


def _follow(client: httpx.Client, progress: Progress, batch_id: str, accepted: int) -> None:
    task = progress.add_task("delivery", total=accepted)
    while True:
        status = _check(client.get(f"/sms/batch/{batch_id}"))
        finished = sum(status[k] for k in ("delivered", "failed", "expired", "cancelled"))
        progress.update(task, completed=finished)
        if status["done"]:
            return
        time.sleep(1)


@batch_app.command("status")
def batch_status(batch_id: str, key: ApiKey = None, api_url: ApiUrl = None) -> None:
    """Print a batch's live counters."""
    with _client(api_url, key) as client:
        typer.echo(
            orjson.dumps(
                _check(client.get(f"/sms/batch/{batch_id}")), option=orjson.OPT_INDENT_2
            ).decode()
        )
