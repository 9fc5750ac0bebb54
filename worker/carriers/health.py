"""`smsq carriers check`: validate the carrier configuration and probe each carrier.

A probe never sends an SMS: each adapter makes the cheapest authenticated request its carrier
has (`CarrierAdapter.probe`: the simulator's `/stats`, Kannel's sendsms without a recipient,
Twilio's account resource, a GET of the generic carrier's URL) and reads the answer: reachable,
credentials refused, or down. Breaker states come from Redis when it answers.
"""

from __future__ import annotations

import httpx
import redis

from worker.breaker import CircuitBreaker
from worker.carriers.base import AdapterContext, Probe
from worker.carriers.config import CarrierConfig, CarriersConfig, load_carriers
from worker.settings import Settings, get_settings
from worker.store.keys import breaker_key


def probe(config: CarrierConfig, client: httpx.Client, settings: Settings | None = None) -> Probe:
    """Ask a carrier something harmless, as its adapter knows how; classify the answer."""
    context = AdapterContext(client=client, settings=settings or get_settings())
    return config.adapter.probe(config.options, context)


def check(
    settings: Settings, client: httpx.Client, store: redis.Redis | None
) -> tuple[bool, list[str]]:
    """Validate and probe; (all healthy, report lines). ValueError when the config is invalid."""
    config = load_carriers(settings)
    source = settings.carriers_file or "SMSQ_CARRIER*"
    lines = [f"{len(config.carriers)} carrier(s), {len(config.routes)} route(s) from {source}"]
    healthy = True
    for name, carrier in config.carriers.items():
        result = probe(carrier, client, settings)
        healthy &= result.ok
        lines.append(
            f"  {name:<16} {carrier.type:<7} {carrier.options.address:<28} {result.detail}; "
            f"{_limits(carrier)}; breaker {_breaker(name, carrier, store)}"
        )
    lines.extend(_routes(config))
    return healthy, lines


def _limits(carrier: CarrierConfig) -> str:
    rate = f"{carrier.rate:g}/s burst {carrier.burst}" if carrier.rate else "no rate limit"
    slots = f"{carrier.concurrency} in flight" if carrier.concurrency else "no concurrency cap"
    return f"{rate}, {slots}"


def _breaker(name: str, carrier: CarrierConfig, store: redis.Redis | None) -> str:
    if not carrier.breaker_failures:
        return "off"
    setup = f"{carrier.breaker_failures} failures / {carrier.breaker_cooldown:g} s"
    if store is None:
        return setup
    try:
        state = CircuitBreaker(store, breaker_key(name)).state()
    except redis.RedisError:
        return f"{setup} (state unknown: Redis unreachable)"
    return f"{setup}, {state}"


def _routes(config: CarriersConfig) -> list[str]:
    lines = []
    for route in config.routes:
        where = ", ".join(route.prefixes + route.countries) or "default"
        order = " → ".join(route.carriers)
        weights = (
            f" (weights {', '.join(f'{w:g}' for w in route.weights)})" if route.weights else ""
        )
        lines.append(f"  route {where}: {order}{weights}")
    return lines
