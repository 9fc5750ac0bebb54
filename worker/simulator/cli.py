"""`smsq carrier-sim`: run the carrier simulator under uvicorn."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from worker.settings import get_settings
from worker.simulator.app import create_simulator_app
from worker.simulator.config import SimulatorConfig


def run_simulator(
    host: str, port: int, config: SimulatorConfig, *, log_level: str = "warning"
) -> None:
    """Serve the simulator until interrupted."""
    # No access log: one line per submission would cap throughput well below 2,000/s.
    uvicorn.run(
        create_simulator_app(config),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        ws="none",
    )


def carrier_sim(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8025,
    latency_ms: Annotated[float, typer.Option(help="Added to every answer.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Plus a random 0..jitter.")] = 0.0,
    receipt_delay: Annotated[float, typer.Option(help="Seconds until the receipt.")] = 0.2,
    undelivered_ratio: Annotated[float, typer.Option(help="Share of UNDELIV.")] = 0.0,
    expired_ratio: Annotated[float, typer.Option(help="Share of EXPIRED.")] = 0.0,
    error_rate_5xx: Annotated[float, typer.Option(help="Share answered 503.")] = 0.0,
    error_rate_429: Annotated[float, typer.Option(help="Share answered 429.")] = 0.0,
    retry_after: Annotated[float, typer.Option(help="Retry-After of a 429, seconds.")] = 1.0,
    reject_prefix: Annotated[
        list[str] | None, typer.Option(help="Refuse numbers starting so (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable outcomes.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    latency_dist: Annotated[
        str, typer.Option(help="uniform, exponential (mean jitter) or lognormal (p99).")
    ] = "uniform",
    error_rate_4xx: Annotated[float, typer.Option(help="Share answered 400.")] = 0.0,
    outage: Annotated[
        list[str] | None, typer.Option(help="START:END seconds after start: all 503 (repeatable).")
    ] = None,
    max_rate: Annotated[float, typer.Option(help="Submissions/s before 429s; 0 = none.")] = 0.0,
    receipt_jitter: Annotated[float, typer.Option(help="Plus 0..jitter s per receipt.")] = 0.0,
    duplicate_receipts: Annotated[float, typer.Option(help="Share sent twice.")] = 0.0,
    out_of_order_receipts: Annotated[
        float, typer.Option(help="Share followed by a late ENROUTE.")
    ] = 0.0,
    fake_fast_receipts: Annotated[float, typer.Option(help="Share DELIVRD at once.")] = 0.0,
    receipts_for: Annotated[str, typer.Option(help="segment, or last (part only).")] = "segment",
    dedupe_client_refs: Annotated[
        bool, typer.Option(help="A repeated client_ref gets the first carrier id, no new SMS.")
    ] = True,
    receipt_batch: Annotated[
        int, typer.Option(help="Receipts per POST, as one JSON list; 1 = one each.")
    ] = 1,
    receipt_batch_window_ms: Annotated[
        float, typer.Option(help="With --receipt-batch: POST what is due at least this often.")
    ] = 50.0,
    receipt_secret: Annotated[
        str,
        typer.Option(
            help="Standard Webhooks secret (whsec_…) to sign receipts with; batches then group "
            "by path. Default: SMSQ_CARRIER_RECEIPT_SECRET.",
            show_default=False,
        ),
    ] = "",
    mo_url: Annotated[
        str,
        typer.Option(
            help="Where POST /mo sends inbound messages. Default: SMSQ_PUBLIC_URL's "
            "/carriers/sim/mo.",
            show_default=False,
        ),
    ] = "",
    scenario: Annotated[
        Path | None, typer.Option(help="TOML file of these settings; flags given win.")
    ] = None,
) -> None:
    """Run a carrier simulator: an SMSC over HTTP that reassembles, answers and sends receipts."""
    if not receipt_secret:  # what smsq's API checks for its single carrier (`smsq up` sets it)
        receipt_secret = get_settings().carrier_receipt_secret.get_secret_value()
    if not mo_url:  # `smsq up` gives its children the API's public URL
        mo_url = f"{get_settings().effective_public_url}/carriers/sim/mo"
    given = dict(locals())
    host, port, log_level = given.pop("host"), given.pop("port"), given.pop("log_level")
    scenario_path = given.pop("scenario")
    given["reject_prefixes"] = tuple(given.pop("reject_prefix") or ())
    try:
        given["outages"] = tuple(_window(text) for text in given.pop("outage") or ())
        config = scenario_config(scenario_path, given)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"carrier simulator on http://{host}:{port}")
    run_simulator(host, port, config, log_level=log_level)


def scenario_config(path: Path | None, flags: dict[str, Any]) -> SimulatorConfig:
    """The config from a TOML scenario (same keys as the flags, `outages = [[0, 30]]`), with
    every flag that differs from its default on top; ValueError when something is wrong."""
    defaults = SimulatorConfig()
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"scenario {path}: {exc}") from exc
        known = {f.name for f in fields(SimulatorConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"scenario {path}: unknown settings {unknown}")
        for key in ("outages", "reject_prefixes"):
            if key in values:
                values[key] = tuple(tuple(v) if isinstance(v, list) else v for v in values[key])
    for key, value in flags.items():
        if value != getattr(defaults, key) or key not in values:
            values[key] = value
    return SimulatorConfig(**values)


def _window(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    if not sep:
        raise ValueError(f"outage {text!r} must be START:END (seconds)")
    return float(start), float(end)
