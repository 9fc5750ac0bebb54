"""The `smsq` command line: run the system, manage keys, preview encodings, run the simulator.

Commands that talk to a running system find it as `producer.instance` says (the data
directory's `smsq up`, or `SMSQ_REDIS_URL`); expected failures (nothing running, API or Redis
unreachable, bad input) are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import httpx
import redis
import typer
from typer.core import TyperGroup

from producer import campaigns, devkey
from producer import mo as inbound
from producer.desk import MessageDesk
from producer.instance import DataDir, NoInstanceError, client_settings
from producer.library import Producer
from producer.logfiles import Follower, last_lines, log_files
from producer.preview import preview
from producer.up import UpOptions
from producer.up import up as run_up
from worker.celery_app import create_app as create_celery_app
from worker.errors import ValidationError
from worker.geo import check_countries
from worker.keys import (
    ALL_SCOPES,
    OTP_OPTOUT_POLICIES,
    OTP_OPTOUT_REFUSE,
    KeyStore,
    check_otp_optout,
    parse_duration,
    parse_rate,
)
from worker.logs import configure as configure_logs
from worker.queueing import CeleryPublisher, publishes_directly
from worker.quotas import Quotas
from worker.redis_urls import connect, redacted
from worker.settings import Settings, get_settings
from worker.simulator import carrier_sim
from worker.store import Store

DEFAULT_SCOPES = ",".join(ALL_SCOPES)
COUNTRIES_HELP = "Where it may send: US,GB,… or * for all (default: SMSQ_ALLOWED_COUNTRIES)"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `smsq: message` on stderr; the Exit to raise."""
    typer.echo(f"smsq: {message}", err=True)
    return typer.Exit(code)


class SmsqGroup(TyperGroup):
    """Every command runs inside: expected failures become one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context: typer vendors click
        try:
            return super().invoke(ctx)
        except NoInstanceError as exc:
            raise fail(str(exc)) from None
        except httpx.TransportError as exc:
            raise fail(f"cannot reach the API{_where(exc)}: {type(exc).__name__} {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise fail(f"Redis does not answer: {exc}") from None
        except ValidationError as exc:
            raise fail(f"invalid {exc.field or 'input'}: {exc.message}", 2) from None


def _where(exc: httpx.TransportError) -> str:
    try:
        return f" at {exc.request.url.copy_with(path='/', query=None)}"
    except RuntimeError:  # no request attached
        return ""


app = typer.Typer(
    name="smsq",
    help="smsq: send SMS and OTP codes at volume.",
    no_args_is_help=True,
    add_completion=False,
    cls=SmsqGroup,
)
keys_app = typer.Typer(
    help="Create, list, limit and revoke API keys; rotate their signing secrets.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
app.command("preview")(preview)
app.command("carrier-sim")(carrier_sim)
app.command("send")(campaigns.send)
app.add_typer(campaigns.batch_app, name="batch")
app.add_typer(inbound.mo_app, name="mo")
app.add_typer(inbound.optouts_app, name="optouts")
keys_app.add_typer(inbound.numbers_app, name="numbers")
OTP_OPTOUT_HELP = "Its OTP codes to numbers that opted out: refuse, or exempt (transactional)"


def _settings() -> Settings:
    """The settings of a command that talks to the running system (`producer.instance`)."""
    return client_settings(get_settings())


def _redis(settings: Settings | None = None) -> redis.Redis:
    settings = settings or _settings()
    assert settings.redis_url is not None  # client_settings names a Redis or raises
    return connect(
        settings.redis_url, sentinel_service=settings.redis_sentinel_service, decode_responses=True
    )


@app.command("up")
def up_command(
    port: Annotated[int | None, typer.Option(help="API port (default SMSQ_API_PORT)")] = None,
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes per lane but otp (SMSQ_LANE_PROCESSES)"),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Threads per worker (SMSQ_WORKER_CONCURRENCY)")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show the children's logs here")
    ] = False,
) -> None:
    """Run the whole system: API, workers, scheduler, carrier simulator, embedded Redis."""
    configure_logs("WARNING")
    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(update={"api_port": port})
    raise typer.Exit(run_up(settings, UpOptions(concurrency, processes, verbose)))


@app.command("logs")
def logs_command(
    child: Annotated[
        str | None, typer.Argument(help="api, worker-dlr, scheduler…; default: every child")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing new lines")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Last lines of each (-1: all)")] = 100,
) -> None:
    """Show the logs of `smsq up`'s children (kept under the data dir, `<child>.log`)."""
    logs = DataDir.of(get_settings()).logs
    try:
        paths = log_files(logs, child)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    follower = Follower(logs, child)
    follower.poll()  # from here on, follow
    for path in paths:
        name = path.name.removesuffix(".log")
        for line in last_lines(path, lines):
            typer.echo(line if child else f"{name} | {line}")
    try:
        while follow:
            for name, line in follower.poll():
                typer.echo(line if child else f"{name} | {line}")
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()


def _seconds(name: str, text: str) -> Any:
    """A reconciler timing option (seconds), also read from `SMSQ_RECONCILE_<NAME>`."""
    envvar = "SMSQ_RECONCILE_" + name.upper().replace("-", "_")
    return typer.Option(f"--{name}", envvar=envvar, help=f"{text}; docs/reliability.md")


@app.command("scheduler")
def scheduler_command(
    interval: Annotated[float | None, _seconds("interval", "Between reconciler passes")] = None,
    grace: Annotated[float | None, _seconds("grace", "Overdue before reconciling")] = None,
    claim_lease: Annotated[float | None, _seconds("claim-lease", "Claim age of a dead run")] = None,
    receipt_deadline: Annotated[
        float | None, _seconds("receipt-deadline", "Accepted, no receipt: expire after")
    ] = None,
    unacked_after: Annotated[
        float | None, _seconds("unacked-after", "Put back tasks held unacked this long")
    ] = None,
) -> None:
    """Run the durable scheduler and the reconciler (several may run; one holds the lock)."""
    from dataclasses import replace

    from worker.reconciler import ReconcilerConfig
    from worker.scheduler import build_scheduler

    settings = get_settings()
    configure_logs(settings.log_level)
    config = ReconcilerConfig.from_settings(settings)
    config = replace(
        config,
        interval=interval or config.interval,
        grace=grace or config.grace,
        claim_lease=claim_lease or config.claim_lease,
        receipt_deadline=receipt_deadline or config.receipt_deadline,
        unacked_after=unacked_after or config.unacked_after,
    )
    scheduler = build_scheduler(settings, config)
    watcher_stop = start_batch_watcher(settings)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop())
    scheduler.run()
    watcher_stop.set()


@app.command("smpp")
def smpp_command() -> None:
    """Run the SMPP connector: hold the binds of every `type = "smpp"` carrier."""
    from worker.smpp.connector import run

    settings = get_settings()
    configure_logs(settings.log_level)
    code = run(settings)
    if code:
        raise fail("no SMPP carrier configured (type = \"smpp\" in SMSQ_CARRIERS_FILE)", code)


def start_batch_watcher(settings: Settings) -> threading.Event:
    """Run the batch progress / completion callbacks in a thread; set the event to stop it."""
    from worker.batch_progress import build_watcher, run_watcher

    watcher = build_watcher(settings)
    stopping = threading.Event()
    threading.Thread(
        target=run_watcher, args=(watcher, stopping, uuid.uuid4().hex), daemon=True
    ).start()
    return stopping


@keys_app.command("create")
def keys_create(
    name: str,
    scope: Annotated[str, typer.Option(help="Comma-separated: send,otp,read")] = DEFAULT_SCOPES,
    rate: Annotated[
        str | None, typer.Option(help="Requests per second over all calls: 10/s, 600/m, 5000/h")
    ] = None,
    burst: Annotated[int, typer.Option(help="Calls at once above the rate (default 1 s)")] = 0,
    daily: Annotated[int, typer.Option(help="Messages per UTC day (a batch: its recipients)")] = 0,
    countries: Annotated[str, typer.Option(help=COUNTRIES_HELP)] = "",
    mo_url: inbound.MoUrlOption = None,
    otp_optout: Annotated[str, typer.Option(help=OTP_OPTOUT_HELP)] = OTP_OPTOUT_REFUSE,
) -> None:
    """Create a key; prints it once (only its hash is stored) and its receipt-signing secret."""
    scopes = tuple(s.strip() for s in scope.split(",") if s.strip())
    settings = _settings()
    url = inbound.check_mo_url(mo_url or "", settings)
    try:
        per_second = parse_rate(rate) if rate is not None else 0.0
        created = KeyStore(_redis(settings)).create(
            name, scopes, rate=per_second, burst=burst, daily=daily,
            countries=countries.split(","), mo_url=url, otp_optout=otp_optout,
        )  # fmt: skip
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"key id          {created.key.id}")
    typer.echo(f"API key         {created.api_key}")
    typer.echo(f"webhook secret  {created.webhook_secret}")
    typer.echo("The API key is shown once; store it now.")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Replace the development key of the data directory (the one `smsq up` prints and the
    CLI uses): a new key and secret, the old key revoked at once."""
    settings = _settings()
    dev = devkey.rotate(KeyStore(_redis(settings)), DataDir.of(settings))
    typer.echo(f"key id          {dev.id}")
    typer.echo(f"API key         {dev.api_key}")
    typer.echo(f"webhook secret  {dev.secret}")
    typer.echo("The previous development key is revoked; smsq up prints this one from now on.")


@keys_app.command("list")
def keys_list() -> None:
    """List keys with scopes, limits, today's use and signing secrets (never the keys)."""
    client = _redis()
    quotas = Quotas(client)
    now = int(time.time() * 1000)
    for key in KeyStore(client).list():
        state = "revoked" if key.revoked else "active"
        rate = f"{key.rate:g}/s" if key.rate else "-"
        daily = f"{quotas.used_today(key.id)}/{key.daily}" if key.daily else "-"
        live = [s for s in key.signing if s.is_live(now)]
        retiring = [s.expires_at for s in live if s.expires_at is not None]
        secrets = f"{len(live)}" + (f" (old ends {_iso(min(retiring))})" if retiring else "")
        countries = ",".join(key.countries) or "default"
        typer.echo(
            f"{key.id}  {key.name:<24} {state:<8} scopes={','.join(key.scopes):<13} "
            f"rate={rate:<8} daily={daily:<12} secrets={secrets}  mo-url={key.mo_url or '-'}  "
            f"otp-optout={key.otp_optout}  countries={countries}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: str,
    cancel_pending: Annotated[
        bool,
        typer.Option(
            "--cancel-pending",
            help="Also cancel the key's queued and scheduled messages (as DELETE /sms/{id})",
        ),
    ] = False,
) -> None:
    """Revoke a key at once (its queued and scheduled messages still go, unless cancelled)."""
    settings = _settings()
    client = _redis(settings)
    if not KeyStore(client).revoke(key_id):
        typer.echo(f"no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
    if cancel_pending:
        # After the revocation: no new message of the key can be accepted meanwhile.
        celery = create_celery_app(settings)
        try:
            publisher = CeleryPublisher(celery, client, direct=publishes_directly(settings))
            cancelled = MessageDesk(settings, Store(client), publisher).cancel_pending(key_id)
        finally:
            celery.close()
        typer.echo(f"cancelled {cancelled} pending message(s)")


@keys_app.command("limits")
def keys_limits(
    key_id: str,
    rate: Annotated[str | None, typer.Option(help="10/s, 600/m, 5000/h; 0 = none")] = None,
    burst: Annotated[int | None, typer.Option(help="Calls at once above the rate")] = None,
    daily: Annotated[int | None, typer.Option(help="Messages per UTC day; 0 = none")] = None,
    countries: Annotated[str | None, typer.Option(help=COUNTRIES_HELP + "; '' = default")] = None,
    mo_url: Annotated[
        str | None, typer.Option("--mo-url", help="Where its inbound messages go; '' = nowhere")
    ] = None,
    otp_optout: Annotated[
        str | None, typer.Option(help=f"{OTP_OPTOUT_HELP} ({'/'.join(OTP_OPTOUT_POLICIES)})")
    ] = None,
) -> None:
    """Change a key's rate, burst, daily quota, countries, mo-url or OTP opt-out policy
    (takes effect on its next call)."""
    settings = _settings()
    url = None if mo_url is None else inbound.check_mo_url(mo_url, settings)
    try:
        per_second = None if rate is None else (0.0 if rate.strip() == "0" else parse_rate(rate))
        regions = None if countries is None else check_countries(countries.split(","))
        if otp_optout is not None:
            check_otp_optout(otp_optout)  # bad input before looking the key up
        store = KeyStore(_redis(settings))
        found = store.set_limits(key_id, rate=per_second, burst=burst, daily=daily)
        if found and regions is not None:
            found = store.set_countries(key_id, regions)
        if found and (url is not None or otp_optout is not None):
            found = store.set_inbound(key_id, mo_url=url, otp_optout=otp_optout)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not found:
        typer.echo(f"no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"updated {key_id}")


@keys_app.command("rotate-secret")
def keys_rotate_secret(
    key_id: str,
    overlap: Annotated[
        str, typer.Option(help="How long the old secret keeps signing too: 24h, 30m, 7d, 0")
    ] = "24h",
) -> None:
    """Add a new receipt-signing secret; receipts carry both signatures until the overlap ends."""
    try:
        seconds = parse_duration(overlap)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    secret = KeyStore(_redis()).rotate_secret(key_id, seconds)
    if secret is None:
        typer.echo(f"no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"webhook secret  {secret}")
    ends = _iso(int(time.time() * 1000) + seconds * 1000) if seconds else "now"
    typer.echo(f"The previous secret stops signing at {ends}; update your receivers before then.")


def _iso(ms: int) -> str:
    from worker.clock import iso_ms

    return str(iso_ms(ms))


@app.command("status")
def status_command(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for workers to answer")] = 1.0,
) -> None:
    """Queue depths, scheduler backlog, workers seen, carriers and breakers, at a glance."""
    from producer.status import gather, render

    settings = _settings()
    client = _redis(settings)
    try:
        report = gather(settings, client, timeout)
    except redis.RedisError as exc:
        url = redacted(settings.effective_redis_url)
        raise fail(f"Redis at {url} does not answer: {exc}") from None
    finally:
        client.close()
    typer.echo(render(report))


dlr_app = typer.Typer(help="Receipts to clients: send them again.", no_args_is_help=True)
app.add_typer(dlr_app, name="dlr")


@dlr_app.command("replay")
def dlr_replay(
    targets: Annotated[list[str] | None, typer.Argument(help="Message ids (or id:level)")] = None,
    since: Annotated[str | None, typer.Option(help="Dead-lettered from (ISO 8601)")] = None,
    until: Annotated[str | None, typer.Option(help="Dead-lettered before (ISO 8601)")] = None,
) -> None:
    """Send receipts again: the given messages' or those dead-lettered in a time range.

    Exit 1 when nothing was replayed, or some named message had no receipt to send."""
    from worker.celery_app import create_app
    from worker.queueing import CeleryPublisher, publishes_directly
    from worker.receipts import dead_letters, replay
    from worker.store import Store

    if not targets and since is None and until is None:
        typer.echo("name message ids, or a time range with --since / --until", err=True)
        raise typer.Exit(2)
    settings = _settings()
    store = Store(_redis(settings))
    named = list(targets or [])
    chosen = list(named)
    if since is not None or until is not None:
        chosen += dead_letters(store, _epoch_ms(since) or 0, _epoch_ms(until))
    publisher = CeleryPublisher(
        create_app(settings), store.redis, direct=publishes_directly(settings)
    )
    queued = {target: replay(store, publisher, [target]) for target in chosen}
    missing = [target for target in named if not queued[target]]
    for target in missing:
        typer.echo(f"smsq: nothing to replay for {target} (no such message or receipt)", err=True)
    if not any(queued.values()):
        raise fail("nothing replayed")
    typer.echo(f"replaying {sum(queued.values())} receipt(s)")
    if missing:
        raise typer.Exit(1)


def _epoch_ms(text: str | None) -> int | None:
    """Milliseconds of an ISO 8601 time (UTC when it names no offset)."""
    if text is None:
        return None
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def main() -> None:
    """Entry point of the `smsq` console script."""
    app()


# -- OTP: `smsq otp send` / `smsq otp verify`, through the producer library --------------------
otp_app = typer.Typer(help="Send and check OTP codes (on the store).", no_args_is_help=True)
app.add_typer(otp_app, name="otp")
KeyIdOption = Annotated[str, typer.Option("--key-id", help="The key id codes are recorded under")]


def _otp_call(
    key_id: str, call: Callable[[Producer], Mapping[str, object]]
) -> Mapping[str, object]:
    """Run one library call on the running system (`Producer()` finds it); print its JSON, or
    the error with a non-zero exit (2: invalid input, 3: refused by a limit)."""
    from worker.errors import NotFoundError, RateLimitedError
    from worker.otp.codes import OtpUnavailableError

    try:
        with Producer(key_id=key_id) as producer:
            result = call(producer)
    except RateLimitedError as exc:
        raise fail(f"refused: {exc} (retry after {exc.retry_after:.0f} s)", 3) from None
    except (OtpUnavailableError, NotFoundError) as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(dict(result)))
    return result


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
    """Check a code; prints {"valid", "status", "attempts_remaining"}; exit 1 unless valid,
    so `smsq otp verify "$code" --id "$id" && login` is safe."""
    from producer.otp import verdict_json

    verdict = _otp_call(
        key_id, lambda p: verdict_json(p.otp_verify(code, id=challenge_id, to=to, purpose=purpose))
    )
    if verdict.get("valid") is not True:
        raise typer.Exit(1)


# -- Carriers: `smsq carriers check` -----------------------------------------------------------
carriers_app = typer.Typer(help="Check the carrier configuration.", no_args_is_help=True)
app.add_typer(carriers_app, name="carriers")
carriers_app.command("mo-url")(inbound.carriers_mo_url)


@carriers_app.command("check")
def carriers_check_command() -> None:
    """Validate SMSQ_CARRIERS_FILE (or SMSQ_CARRIER*, the running smsq up's simulator by
    default) and probe each carrier (sends no SMS).

    Exit 0: all reachable; 1: some carrier is not; 2: the configuration is invalid.
    """
    from worker.carriers.health import check

    settings = _settings()
    timeout = httpx.Timeout(settings.carrier_read_timeout, connect=settings.carrier_connect_timeout)
    try:
        with httpx.Client(timeout=timeout) as client:
            healthy, lines = check(settings, client, _redis(settings))
    except ValueError as exc:
        typer.echo(f"invalid carrier configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in lines:
        typer.echo(line)
    raise typer.Exit(0 if healthy else 1)
