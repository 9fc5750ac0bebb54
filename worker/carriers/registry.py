"""Build carriers from settings: each named adapter, and the routed carrier a worker sends with.

- With a carriers file (`SMSQ_CARRIERS_FILE`): a `RoutedCarrier` over every carrier in it.
- Else the single carrier of `SMSQ_CARRIER*`: the plain adapter, or, when a shared rate or
  concurrency limit is set (`SMSQ_CARRIER_RATE`, `SMSQ_CARRIER_CONCURRENCY`), a `RoutedCarrier`
  over that one carrier, which adds the limits and its circuit breaker.
"""

from __future__ import annotations

import httpx
import redis

from worker.breaker import CircuitBreaker
from worker.carriers.adapters import type_names
from worker.carriers.base import AdapterContext, Carrier
from worker.carriers.config import CarrierConfig, CarriersConfig, load_carriers, single_carrier
from worker.carriers.routes import RouteTable
from worker.carriers.routing import Gate, RoutedCarrier
from worker.errors import NotFoundError
from worker.ratelimit import ConcurrencyLimiter, RateLimiter
from worker.settings import Settings
from worker.store.keys import carrier_key_prefix


def build_carrier(
    settings: Settings, client: httpx.Client, redis_client: redis.Redis | None = None
) -> Carrier:
    """The carrier a worker submits through (see the module doc); ValueError when misconfigured."""
    config = load_carriers(settings)
    guarded = any(c.rate or c.concurrency for c in config.carriers.values())
    if not settings.carriers_file and not guarded:
        only = config.carriers[settings.carrier]
        return adapter(settings.carrier, only, settings, client, redis_client)
    if redis_client is None:
        raise ValueError("routing, shared limits and breakers need a Redis client")
    return routed_carrier(config, settings, client, redis_client)


def routed_carrier(
    config: CarriersConfig, settings: Settings, client: httpx.Client, redis_client: redis.Redis
) -> RoutedCarrier:
    """A `RoutedCarrier` over every carrier of `config`, with their limits and breakers."""
    gates = {
        name: gate(
            name,
            adapter(name, carrier, settings, client, redis_client),
            carrier,
            redis_client,
            settings,
        )
        for name, carrier in config.carriers.items()
    }
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
    prefix = carrier_key_prefix(name)
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
    # An adapter that `paces_itself` keeps `rate` in its own process; the workers do not.
    paced = config.rate and not config.adapter.paces_itself
    rate = RateLimiter(client, f"{prefix}:rate", config.rate, config.burst) if paced else None
    slots = None
    if config.concurrency:
        slots = ConcurrencyLimiter(client, f"{prefix}:slots", config.concurrency, lease=longest)
    return Gate(carrier, breaker, rate, slots)


def carrier_for_name(name: str, settings: Settings, client: httpx.Client) -> Carrier:
    """The adapter called `name` (e.g. for `/carriers/{name}/dlr`), configured from settings.

    Every carrier of the carriers file can be built, or without one the single carrier's type
    and the other registered types (configured from `SMSQ_CARRIER*` too). NotFoundError for any
    other name; ValueError when the configuration is invalid.
    """
    if settings.carriers_file:
        config = load_carriers(settings).carriers.get(name)
    elif name in type_names():
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
    """The plain adapter for one carrier's configuration, built by its class."""
    context = AdapterContext(client=client, settings=settings, redis=redis_client)
    return config.adapter.from_config(name, config.options, context)
