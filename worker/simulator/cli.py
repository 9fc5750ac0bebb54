"""`smsq carrier-sim`: run the carrier simulator under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

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
) -> None:
    """Run a carrier simulator: an SMSC over HTTP that reassembles, answers and sends receipts."""
    try:
        config = SimulatorConfig(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            receipt_delay=receipt_delay,
            undelivered_ratio=undelivered_ratio,
            expired_ratio=expired_ratio,
            error_rate_5xx=error_rate_5xx,
            error_rate_429=error_rate_429,
            retry_after=retry_after,
            reject_prefixes=tuple(reject_prefix or ()),
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"carrier simulator on http://{host}:{port}")
    run_simulator(host, port, config, log_level=log_level)
