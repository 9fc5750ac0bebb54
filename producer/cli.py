"""The `smsq` command line: run the system, manage keys, preview encodings, run the simulator."""

from __future__ import annotations

import json
import logging
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import redis
import typer

from producer import campaigns
from producer.library import Producer
from producer.preview import preview
from producer.up import resolve_redis_url
from producer.up import up as run_up
from worker.keys import ALL_SCOPES, KeyStore
from worker.settings import Settings, get_settings
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
app.command("send")(campaigns.send)
app.add_typer(campaigns.batch_app, name="batch")


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
    from worker.queueing import CeleryPublisher, publishes_directly
    from worker.scheduler import Scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    client = redis.Redis.from_url(settings.effective_redis_url)
    publisher = CeleryPublisher(create_app(settings), client, direct=publishes_directly(settings))
    scheduler = Scheduler(client, publisher)
    watcher_stop = start_batch_watcher(settings)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop())
    scheduler.run()
    watcher_stop.set()


def start_batch_watcher(settings: Settings) -> threading.Event:
    """Run the batch progress / completion callbacks in a thread; set the event to stop it."""
    from worker.batch_progress import BatchWatcher, run_watcher
    from worker.callbacks import CallbackSender

    client = redis.Redis.from_url(settings.effective_redis_url, decode_responses=True)
    watcher = BatchWatcher(client, KeyStore(client), CallbackSender.from_settings(settings))
    stopping = threading.Event()
    threading.Thread(
        target=run_watcher, args=(watcher, stopping, uuid.uuid4().hex), daemon=True
    ).start()
    return stopping


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


# -- OTP (#7): `smsq otp send` / `smsq otp verify`, through the producer library ---------------
otp_app = typer.Typer(help="Send and check OTP codes (on the store).", no_args_is_help=True)
app.add_typer(otp_app, name="otp")
KeyIdOption = Annotated[str, typer.Option("--key-id", help="The key id codes are recorded under")]


def _otp_call(key_id: str, call: Callable[[Producer], Mapping[str, object]]) -> None:
    """Run one library call with the settings a running `smsq up` noted (Redis URL, server
    key); print its JSON, or the error with a non-zero exit."""
    from pydantic import SecretStr

    from worker.errors import NotFoundError, RateLimitedError, ValidationError
    from worker.otp.codes import OtpUnavailableError

    settings = get_settings()
    update: dict[str, object] = {"redis_url": resolve_redis_url(settings)}
    noted_key = Path(settings.data_dir) / "secret_key"
    if not settings.secret_key.get_secret_value() and noted_key.exists():
        update["secret_key"] = SecretStr(noted_key.read_text().strip())
    try:
        with Producer(settings=settings.model_copy(update=update), key_id=key_id) as producer:
            result = call(producer)
    except ValidationError as exc:
        typer.echo(f"invalid {exc.field or 'input'}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except RateLimitedError as exc:
        typer.echo(f"refused: {exc} (retry after {exc.retry_after:.0f} s)", err=True)
        raise typer.Exit(3) from None
    except (OtpUnavailableError, NotFoundError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(dict(result)))


@otp_app.command("send")
def otp_send_command(
    to: str,
    purpose: Annotated[str, typer.Option(help="One active code per purpose")] = "default",
    template: Annotated[str, typer.Option(help="Must contain {code}")] = "Your code is {code}",
    length: Annotated[int, typer.Option(help="Digits, 4 to 10")] = 6,
    ttl: Annotated[int, typer.Option(help="Seconds, at most 600")] = 300,
    sender: Annotated[str | None, typer.Option("--from", help="The sender")] = None,
    resend_after: Annotated[
        int | None, typer.Option(help="Resend once if not delivered after this many seconds")
    ] = None,
    key_id: KeyIdOption = "cli",
) -> None:
    """Send a code by SMS; prints the challenge id and expiry (never the code)."""
    _otp_call(
        key_id,
        lambda p: p.otp_send(
            to, sender=sender, template=template, length=length, ttl=ttl, purpose=purpose,
            resend_after=resend_after,
        ).as_json(),
    )  # fmt: skip


@otp_app.command("verify")
def otp_verify_command(
    code: str,
    challenge_id: Annotated[str | None, typer.Option("--id", help="The challenge id")] = None,
    to: Annotated[str | None, typer.Option(help="Or the number (with --purpose)")] = None,
    purpose: Annotated[str, typer.Option(help="The purpose the code was sent for")] = "default",
    key_id: KeyIdOption = "cli",
) -> None:
    """Check a code; prints {"valid", "status", "attempts_remaining"}."""
    from producer.otp import verdict_json

    _otp_call(
        key_id, lambda p: verdict_json(p.otp_verify(code, id=challenge_id, to=to, purpose=purpose))
    )
