"""`smsq status`: the running system at a glance, read from Redis and the workers.

Queue depths per lane, the durable schedule (backlog, overdue, held by a scheduler?), dead
receipts, the Celery workers that answer a ping, and each carrier with its circuit breaker.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from worker.celery_app import create_app
from worker.metrics import Gauges, breaker_states, read_gauges
from worker.redis_urls import redacted
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class Report:
    redis_url: str
    gauges: Gauges
    workers: list[str]  # names of the workers that answered a ping
    carriers: dict[str, str]  # carrier -> breaker state ("closed", "open", "half-open", "n/a")
    carriers_note: str = ""  # why carriers could not be listed, if they could not


def configured_carriers(settings: Settings) -> tuple[list[str], str]:
    """The carriers this configuration sends through, or none and why."""
    try:
        from worker.carriers.config import load_carriers
    except ImportError:  # an installation without carrier configuration files
        return [settings.carrier], ""
    try:
        return list(load_carriers(settings).carriers), ""
    except ValueError as exc:
        return [], f"carriers configuration unreadable: {exc}"


def ping_workers(settings: Settings, timeout: float) -> list[str]:
    """Worker names that answer a Celery broadcast ping within `timeout` seconds."""
    app = create_app(settings)
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def gather(settings: Settings, client: redis.Redis, timeout: float = 1.0) -> Report:
    """Everything `smsq status` prints; `redis.RedisError` when Redis does not answer."""
    gauges = read_gauges(client)
    names, note = configured_carriers(settings)
    breakers = breaker_states(client)
    carriers = {name: breakers.get(name, "closed") for name in names}
    carriers.update({name: state for name, state in breakers.items() if name not in carriers})
    return Report(
        redis_url=redacted(settings.effective_redis_url),
        gauges=gauges,
        workers=ping_workers(settings, timeout),
        carriers=carriers,
        carriers_note=note,
    )


def render(report: Report) -> str:
    """The report as a few aligned lines."""
    g = report.gauges
    queues = "  ".join(f"{name}={depth}" for name, depth in g.queues.items())
    scheduler = "running" if g.scheduler_up else "NOT RUNNING (no scheduler holds the lock)"
    workers = ", ".join(report.workers) if report.workers else "none answered"
    carriers = (
        "  ".join(f"{name}: {state}" for name, state in report.carriers.items())
        or report.carriers_note
        or "n/a"
    )
    return "\n".join(
        [
            f"redis       {report.redis_url}",
            f"queues      {queues}  (unacked {g.unacked})",
            f"scheduler   {scheduler}",
            f"schedule    {g.backlog} waiting, {g.overdue} overdue, {g.inflight} in flight",
            f"receipts    {g.dead_letters} dead-lettered",
            f"workers     {workers}",
            f"carriers    {carriers}",
        ]
    )
