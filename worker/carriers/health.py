"""`smsq carriers check`: validate the carrier configuration and probe each carrier.

A probe never sends an SMS: it makes the cheapest authenticated request each carrier has
(the simulator's `/stats`, Kannel's sendsms without a recipient, Twilio's account resource, a
GET of the generic carrier's URL, a TCP connection to an SMSC) and reads the answer:
reachable, credentials refused, or down. Breaker states come from Redis when it answers.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import redis

from worker.breaker import CircuitBreaker
from worker.carriers.config import CarrierConfig, CarriersConfig, load_carriers
from worker.carriers.kannel import SENDSMS_PATH
from worker.carriers.twilio import API_VERSION
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class Probe:
    """One carrier's health: `ok`, and what was seen."""

    ok: bool
    detail: str


def probe(config: CarrierConfig, client: httpx.Client) -> Probe:
    """Ask a carrier something harmless; classify the answer."""
    if config.smpp is not None:
        return _probe_smpp(config.smpp.host, config.smpp.port)
    url, auth = _probe_request(config)
    try:
        response = client.get(url, auth=auth)
    except httpx.HTTPError as exc:
        return Probe(False, f"unreachable ({type(exc).__name__})")
    status = response.status_code
    if status in (401, 403):
        return Probe(False, f"credentials refused ({status})")
    if status >= 500:
        return Probe(False, f"answers {status}")
    return Probe(True, f"reachable ({status})")


def _probe_smpp(host: str, port: int) -> Probe:
    """An SMSC's port accepts a connection (no bind: an account's binds may all be taken by
    the connector, and a refused extra bind would say nothing of its credentials)."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return Probe(False, f"unreachable ({type(exc).__name__})")
    return Probe(True, "port open")


def _probe_request(config: CarrierConfig) -> tuple[str, tuple[str, str] | None]:
    base = config.url.rstrip("/")
    if config.type == "sim":
        return f"{base}/stats", None
    if config.type == "kannel":
        # Credentials but no recipient: 403 if they are wrong, else a 4xx about `to`.
        url = base + SENDSMS_PATH if urlsplit(base).path in ("", "/") else base
        query = httpx.QueryParams({"username": config.username, "password": config.secret})
        return f"{url}?{query}", None
    if config.type == "twilio":
        url = f"{base}/{API_VERSION}/Accounts/{config.username}.json"
        return url, (config.username, config.secret)
    return base, (config.username, config.secret) if config.username else None


def check(
    settings: Settings, client: httpx.Client, store: redis.Redis | None
) -> tuple[bool, list[str]]:
    """Validate and probe; (all healthy, report lines). ValueError when the config is invalid."""
    config = load_carriers(settings)
    source = settings.carriers_file or "SMSQ_CARRIER*"
    lines = [f"{len(config.carriers)} carrier(s), {len(config.routes)} route(s) from {source}"]
    healthy = True
    for name, carrier in config.carriers.items():
        result = probe(carrier, client)
        healthy &= result.ok
        lines.append(
            f"  {name:<16} {carrier.type:<7} {_where(carrier):<28} {result.detail}; "
            f"{_limits(carrier)}; breaker {_breaker(name, carrier, store)}"
        )
    lines.extend(_routes(config))
    return healthy, lines


def _where(carrier: CarrierConfig) -> str:
    if carrier.smpp is not None:
        return f"{carrier.smpp.host}:{carrier.smpp.port}"
    return _host(carrier.url)


def _host(url: str) -> str:
    parts = urlsplit(url)  # host and port only: credentials may sit in the rest
    if parts.hostname is None:
        return "?"
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


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
        state = CircuitBreaker(store, f"smsq:carrier:{name}:breaker").state()
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
