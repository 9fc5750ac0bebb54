"""Which carriers may take a destination, in which order: prefix / country routes, weights.

The route is the one with the longest matching prefix; failing that, one naming the number's
country; failing that, the default route (no prefixes, no countries). Within a route the first
carrier is drawn by weight, seeded by the message id, so every segment (and every retry) of a
message starts at the same carrier; the others follow in the route's order.
"""

from __future__ import annotations

import random
from functools import lru_cache

from worker.carriers.config import CarriersConfig, RouteConfig


class RouteTable:
    """The routes of one configuration; pure, no I/O."""

    def __init__(self, config: CarriersConfig) -> None:
        self.routes = config.routes
        self._uses_countries = any(route.countries for route in self.routes)

    def route_for(self, to: str) -> RouteConfig | None:
        """The route for an E.164 destination, or None if no route matches."""
        number = "+" + to.lstrip("+")
        best: RouteConfig | None = None
        best_length = 0
        for route in self.routes:
            for prefix in route.prefixes:
                if number.startswith(prefix) and len(prefix) > best_length:
                    best, best_length = route, len(prefix)
        if best is not None:
            return best
        if self._uses_countries:
            country = region_of(number)
            for route in self.routes:
                if country in route.countries:
                    return route
        return next((route for route in self.routes if route.is_default), None)

    def order(self, to: str, message_id: str) -> list[str]:
        """The carriers to try for a message, first choice first; [] when no route matches."""
        route = self.route_for(to)
        if route is None:
            return []
        return ordered(route, message_id)


def ordered(route: RouteConfig, message_id: str) -> list[str]:
    """The route's carriers with the first one drawn by weight (stable per message)."""
    carriers = list(route.carriers)
    if route.weights is None or len(carriers) == 1:
        return carriers
    # random.Random seeds a str through SHA-512: the same draw in every process.
    first = random.Random(message_id).choices(carriers, weights=route.weights)[0]
    return [first, *(name for name in carriers if name != first)]


@lru_cache(maxsize=4096)
def region_of(number: str) -> str | None:
    """The ISO 3166 region of an E.164 number (None if phonenumbers cannot tell)."""
    import phonenumbers  # only here: importing it loads large metadata

    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    region: str | None = phonenumbers.region_code_for_number(parsed)
    return region
