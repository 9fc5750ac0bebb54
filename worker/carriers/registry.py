"""Build carriers from settings: each named adapter, and the routed carrier a worker sends with.

- With a carriers file (`SMSQ_CARRIERS_FILE`): a `RoutedCarrier` over every carrier in it.
- Else the single carrier of `SMSQ_CARRIER*`: the plain adapter, or, when a shared rate or
  concurrency limit is set (`SMSQ_CARRIER_RATE`, `SMSQ_CARRIER_CONCURRENCY`), a `RoutedCarrier`
  over that one carrier, which adds the limits and its circuit breaker.
"""

from __future__ import annotations

import base64
from typing import get_args
from urllib.parse import urlsplit

import httpx
import redis

from worker.breaker import CircuitBreaker
from worker.carriers.base import Carrier
from worker.carriers.config import CarrierConfig, CarriersConfig, load_carriers, single_carrier
from worker.carriers.http import HttpCarrier
from worker.carriers.kannel import KannelCarrier
from worker.carriers.routes import RouteTable
from worker.carriers.routing import Gate, RoutedCarrier
from worker.carriers.sim import SimCarrier
from worker.carriers.smpp import SmppCarrier
from worker.carriers.twilio import TwilioCarrier
from worker.errors import NotFoundError
from worker.ratelimit import ConcurrencyLimiter, RateLimiter
from worker.settings import Settings

CARRIER_NAMES: tuple[str, ...] = get_args(Settings.model_fields["carrier"].annotation)


def build_carrier(
    settings: Settings, client: httpx.Client, redis_client: redis.Redis | None = None
) -> Carrier:
    """The carrier a worker submits through (see the module doc); ValueError when misconfigured."""
    config = load_carriers(settings)
    guarded = any(c.rate or c.concurrency for c in config.carriers.values())
    if not settings.carriers_file and not guarded:
        return carrier_for_name(settings.carrier, settings, client)
    if redis_client is None:
        raise ValueError("routing, shared limits and breakers need a Redis client")
    return routed_carrier(config, settings, client, redis_client)


def routed_carrier(
    config: CarriersConfig, settings: Settings, client: httpx.Client, redis_client: redis.Redis
) -> RoutedCarrier:
    """A `RoutedCarrier` over every carrier of `config`, with their limits and breakers."""
    gates = {
        name: gate(
            name, adapter(name, carrier, settings, client, redis_client), carrier, redis_client,
            settings,
        )
        for name, carrier in config.carriers.items()
    }  # fmt: skip
    single = None if settings.carriers_file else next(iter(config.carriers))
    return RoutedCarrier(
        gates,
        RouteTable(config),
        redis_client,
        public_url=settings.effective_public_url,
        max_wait=config.max_wait,
        name=single or "routes",
    )


def gate(
    name: str, carrier: Carrier, config: CarrierConfig, client: redis.Redis, settings: Settings
) -> Gate:
    """`carrier` with the breaker and limits its configuration asks for."""
    prefix = f"smsq:carrier:{name}"
    # A request holds its slot (and a half-open trial) at most as long as it can take.
    longest = settings.carrier_connect_timeout + 2 * settings.carrier_read_timeout + 5.0
    breaker = None
    if config.breaker_failures:
        breaker = CircuitBreaker(
            client,
            f"{prefix}:breaker",
            failures=config.breaker_failures,
            cooldown=config.breaker_cooldown,
            trial_lease=longest,
        )
    # An SMPP carrier's rate counts PDUs on its binds: its connector keeps it, not the workers.
    paced = config.rate and config.type != "smpp"
    rate = RateLimiter(client, f"{prefix}:rate", config.rate, config.burst) if paced else None
    slots = None
    if config.concurrency:
        slots = ConcurrencyLimiter(client, f"{prefix}:slots", config.concurrency, lease=longest)
    return Gate(carrier, breaker, rate, slots)


def carrier_for_name(name: str, settings: Settings, client: httpx.Client) -> Carrier:
    """The adapter called `name` (e.g. for `/carriers/{name}/dlr`), configured from settings.

    Every carrier of the carriers file can be built, or without one the single carrier's type
    and the other built-in names (configured from `SMSQ_CARRIER*` too). NotFoundError for any
    other name; ValueError when the configuration is invalid.
    """
    if settings.carriers_file:
        config = load_carriers(settings).carriers.get(name)
    elif name in CARRIER_NAMES:
        config = single_carrier(settings.model_copy(update={"carrier": name})).carriers[name]
    else:
        config = None
    if config is None:
        raise NotFoundError(f"no carrier named {name[:32]!r}")
    return adapter(name, config, settings, client)


def adapter(
    name: str,
    config: CarrierConfig,
    settings: Settings,
    client: httpx.Client,
    redis_client: redis.Redis | None = None,
) -> Carrier:
    """The plain adapter for one carrier's configuration (an SMPP one queues on Redis)."""
    if config.smpp is not None:
        return SmppCarrier(redis_client, config.smpp, name=name)
    if config.type == "sim":
        return SimCarrier(client, config.url, name=name)
    if config.type == "http":
        return HttpCarrier(
            client, _http_url(config.url), name=name, auth_header=_auth_header(config)
        )
    if config.type == "kannel":
        return KannelCarrier(
            client,
            config.url,
            name=name,
            username=config.username,
            password=config.secret,
            smsc=config.smsc,
            dlr_mask=config.dlr_mask,
        )
    return TwilioCarrier(
        client,
        config.url,
        name=name,
        account_sid=config.username,
        auth_token=config.secret,
        public_url=settings.effective_public_url,
        messaging_service=config.messaging_service,
    )


def _http_url(url: str) -> str:
    """A bare base URL points at smsq's own send endpoint, the default request shape."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/sms/send"
    return url


def _auth_header(config: CarrierConfig) -> tuple[str, str] | None:
    """Basic auth with a username, else a bearer token (an upstream smsq API key)."""
    password = config.secret
    if config.username:
        pair = f"{config.username}:{password}".encode()
        return ("authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    if password:
        return ("authorization", f"Bearer {password}")
    return None
