"""The `smsq` command line: run the system, manage keys, preview encodings, run the simulator."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import redis
import typer

from producer.preview import preview
from producer.up import resolve_redis_url
from producer.up import up as run_up
from worker.keys import ALL_SCOPES, KeyStore
from worker.settings import get_settings
from worker.simulator import carrier_sim

DEFAULT_SCOPES = ",".join(ALL_SCOPES)

app = typer.Typer(
    name="smsq",
    help="smsq: send SMS and OTP codes at volume.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.command("preview")(preview)
app.command("carrier-sim")(carrier_sim)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(resolve_redis_url(get_settings()), decode_responses=True)


@app.command("up")
def up_command(
    concurrency: Annotated[int, typer.Option(help="Threads per worker process")] = 32,
) -> None:
    """Run the whole system: API, workers, scheduler, carrier simulator, embedded Redis."""
    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_up(get_settings(), concurrency))


@app.command("scheduler")
def scheduler_command() -> None:
    """Run the durable scheduler (several may run; one holds the lock and works)."""
    from worker.celery_app import create_app
    from worker.queueing import CeleryPublisher
    from worker.scheduler import Scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    client = redis.Redis.from_url(settings.effective_redis_url)
    scheduler = Scheduler(client, CeleryPublisher(create_app(settings), client))
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop())
    scheduler.run()


@keys_app.command("create")
def keys_create(
    name: str,
    scope: Annotated[str, typer.Option(help="Comma-separated: send,otp,read")] = DEFAULT_SCOPES,
) -> None:
    """Create a key; prints it once (only its hash is stored) and its receipt-signing secret."""
    scopes = tuple(s.strip() for s in scope.split(",") if s.strip())
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        typer.echo(f"unknown scope(s): {', '.join(sorted(unknown))}", err=True)
        raise typer.Exit(2)
    created = KeyStore(_redis()).create(name, scopes)
    typer.echo(f"key id          {created.key.id}")
    typer.echo(f"API key         {created.api_key}")
    typer.echo(f"webhook secret  {created.webhook_secret}")
    typer.echo("The API key is shown once; store it now.")


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never the keys themselves)."""
    for key in KeyStore(_redis()).list():
        state = "revoked" if key.revoked else "active"
        typer.echo(f"{key.id}  {key.name:<24} {state:<8} scopes={','.join(key.scopes)}")


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key at once."""
    if not KeyStore(_redis()).revoke(key_id):
        typer.echo(f"no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def main() -> None:
    """Entry point of the `smsq` console script."""
    app()
