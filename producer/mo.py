"""Inbound messages and opt-outs from the command line (docs/inbound.md):

    smsq mo list [KEY | unowned] [--to N] [--since T] [--limit N]
    smsq mo replay [MO_ID…] [--since T] [--until T]
    smsq optouts list|add|remove KEY [NUMBER]      (KEY `deployment`: the deployment's list)
    smsq keys numbers list|add|remove KEY [NUMBER] [--mo-url URL]
    smsq carriers mo-url [NAME]

They work on the running system's Redis (`producer.instance`), as `smsq keys` does.
"""

from __future__ import annotations

from typing import Annotated

import redis
import typer

from producer.instance import DataDir, client_settings, running
from producer.validation import check_receipt_url, normalize_number
from worker.clock import iso_ms, now_ms
from worker.keys import KeyStore
from worker.mo.owners import Owners, canonical_number
from worker.optouts import DEPLOYMENT, OptOuts
from worker.redis_urls import connect
from worker.settings import Settings, get_settings
from worker.store.mo import NO_OWNER, MoStore

mo_app = typer.Typer(help="Inbound (MO) messages: list them, send webhooks again.",
                     no_args_is_help=True)  # fmt: skip
optouts_app = typer.Typer(
    help="Opt-out lists: numbers that replied STOP to a key's messages.", no_args_is_help=True
)
numbers_app = typer.Typer(
    help="The numbers a key owns: their inbound messages are its.", no_args_is_help=True
)
DEPLOYMENT_NAME = "deployment"
UNOWNED = "unowned"

KeyArgument = Annotated[str, typer.Argument(help="The key id (smsq keys list)")]
MoUrlOption = Annotated[
    str | None, typer.Option("--mo-url", help="Where its inbound messages go (signed POSTs)")
]


def _connection() -> tuple[Settings, redis.Redis]:
    settings = client_settings(get_settings())
    assert settings.redis_url is not None  # client_settings names a Redis or raises
    client = connect(
        settings.redis_url, sentinel_service=settings.redis_sentinel_service, decode_responses=True
    )
    return settings, client


def _no_key(key_id: str) -> typer.Exit:
    typer.echo(f"smsq: no key {key_id}", err=True)
    return typer.Exit(1)


def check_mo_url(url: str, settings: Settings) -> str:
    """The URL if webhooks may go there ("" stays ""); ValidationError naming `mo-url`."""
    return check_receipt_url(url, settings, "mo-url") if url else ""


# -- smsq mo ---------------------------------------------------------------------------------
@mo_app.command("list")
def mo_list(
    key: Annotated[str, typer.Argument(help="A key id, or `unowned`")],
    to: Annotated[str | None, typer.Option(help="Sent to this number")] = None,
    since: Annotated[str | None, typer.Option(help="Received at or after (ISO 8601)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many")] = 50,
) -> None:
    """The newest inbound messages of a key (or those no key owns), one a line: id, time,
    from, to, carrier, keyword, webhook state, text."""
    from producer.routes.mo import parse_since

    _, client = _connection()
    owner = NO_OWNER if key == UNOWNED else key
    records, _next = MoStore(client).page(
        owner, to=canonical_number(to) if to else "",
        since=parse_since(since) if since else None, limit=limit,
    )  # fmt: skip
    for r in records:
        typer.echo(
            f"{r.id}  {iso_ms(r.received_at)}  {r.sender} -> {r.recipient}  {r.carrier}  "
            f"{r.keyword or '-'}  {r.state or 'none'}  {r.text!r}"
        )


@mo_app.command("replay")
def mo_replay(
    mo_ids: Annotated[list[str] | None, typer.Argument(help="MO ids")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered from (ISO 8601)")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before (ISO 8601)")] = None,
) -> None:
    """Send inbound messages' webhooks again (same webhook id and body, a fresh retry
    schedule): the given ones, or those dead-lettered in a time range. Exit 1 when nothing
    was replayed."""
    from producer.routes.mo import parse_since
    from worker.celery_app import create_app
    from worker.contract import ROUTE_MO, Queue
    from worker.queueing import CeleryPublisher, publishes_directly

    if not mo_ids and since is None and until is None:
        typer.echo("name MO ids, or a time range with --since / --until", err=True)
        raise typer.Exit(2)
    settings, client = _connection()
    store = MoStore(client)
    chosen = list(mo_ids or [])
    if since is not None or until is not None:
        chosen += store.dead(parse_since(since) if since else 0,
                             parse_since(until) if until else None)  # fmt: skip
    publisher = CeleryPublisher(create_app(settings), client, direct=publishes_directly(settings))
    replayed = 0
    for mo_id in dict.fromkeys(chosen):
        if store.replay(mo_id, now_ms()):
            publisher.publish(ROUTE_MO, [mo_id], Queue.DLR)
            replayed += 1
        else:
            typer.echo(f"smsq: nothing to replay for {mo_id} (no such MO, or no webhook done)",
                       err=True)  # fmt: skip
    if not replayed:
        raise typer.Exit(1)
    typer.echo(f"replaying {replayed} MO webhook(s)")


# -- smsq optouts ----------------------------------------------------------------------------
def _owner(client: redis.Redis, key: str) -> str:
    """A key id whose key exists, or the deployment's list."""
    if key == DEPLOYMENT_NAME:
        return DEPLOYMENT
    if KeyStore(client).get(key) is None:
        raise _no_key(key)
    return key


@optouts_app.command("list")
def optouts_list(
    key: Annotated[str, typer.Argument(help="A key id, or `deployment`")],
) -> None:
    """The numbers on a key's opt-out list (or the deployment's), with when they opted out."""
    _, client = _connection()
    for number, at in OptOuts(client).numbers(_owner(client, key)):
        typer.echo(f"{number}  {iso_ms(at)}")


@optouts_app.command("add")
def optouts_add(
    key: Annotated[str, typer.Argument(help="A key id, or `deployment`")],
    number: Annotated[str, typer.Argument(help="E.164, e.g. +14155552671")],
) -> None:
    """Put a number on the list: the key's sends to it are refused (`opted_out`)."""
    _, client = _connection()
    e164 = normalize_number(number, "number")
    added = OptOuts(client).add(_owner(client, key), e164)
    typer.echo(f"{'added' if added else 'already listed'} {e164}")


@optouts_app.command("remove")
def optouts_remove(
    key: Annotated[str, typer.Argument(help="A key id, or `deployment`")],
    number: Annotated[str, typer.Argument(help="E.164, e.g. +14155552671")],
) -> None:
    """Take a number off the list (as its START would). Exit 1 if it was not on it."""
    _, client = _connection()
    e164 = normalize_number(number, "number")
    if not OptOuts(client).remove(_owner(client, key), e164):
        typer.echo(f"smsq: {e164} is not on the list", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {e164}")


# -- smsq keys numbers -----------------------------------------------------------------------
@numbers_app.command("list")
def numbers_list(key: KeyArgument) -> None:
    """The numbers a key owns, each with its own mo-url (or the key's)."""
    _, client = _connection()
    found = KeyStore(client).get(key)
    if found is None:
        raise _no_key(key)
    fallback = f"{found.mo_url or '-'} (the key's)"
    for number, url in Owners(client).numbers(key):
        typer.echo(f"{number}  {url or fallback}")


@numbers_app.command("add")
def numbers_add(
    key: KeyArgument,
    number: Annotated[str, typer.Argument(help="A number or short code, or * for any other")],
    mo_url: MoUrlOption = None,
) -> None:
    """Make the key own a number: its inbound messages go to the number's mo-url (or the
    key's), its STOPs to the key's opt-out list."""
    settings, client = _connection()
    url = check_mo_url(mo_url or "", settings)
    if KeyStore(client).get(key) is None:
        raise _no_key(key)
    canonical = canonical_number(number)
    previous = Owners(client).assign(key, canonical, url)
    note = f" (was key {previous}'s)" if previous else ""
    typer.echo(f"{key} owns {canonical}{note}")


@numbers_app.command("remove")
def numbers_remove(
    key: KeyArgument,
    number: Annotated[str, typer.Argument(help="A number the key owns")],
) -> None:
    """The key no longer owns the number. Exit 1 if it did not."""
    _, client = _connection()
    canonical = canonical_number(number)
    if not Owners(client).release(key, canonical):
        typer.echo(f"smsq: {key} does not own {canonical}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{key} no longer owns {canonical}")


def carriers_mo_url(
    name: Annotated[str | None, typer.Argument(help="A carrier; default: every one")] = None,
) -> None:
    """The URL each carrier sends inbound messages to (with its MO token: give it to
    Kannel's sms-service `get-url` with the parameters of docs/inbound.md). Under
    SMSQ_PUBLIC_URL, else the running smsq up's API."""
    from worker.carriers.config import load_carriers
    from worker.receipts.tokens import mo_url

    settings = client_settings(get_settings())
    public_url = settings.effective_public_url
    instance = running(DataDir.of(settings))
    if "public_url" not in settings.model_fields_set and instance and instance.api_url:
        public_url = instance.api_url  # the running smsq up's API
    names = sorted(load_carriers(settings).carriers)
    if name is not None and name not in names:
        typer.echo(f"smsq: no carrier named {name!r} (configured: {', '.join(names)})", err=True)
        raise typer.Exit(1)
    for carrier in [name] if name else names:
        typer.echo(f"{carrier}  {mo_url(public_url, carrier, settings)}")

