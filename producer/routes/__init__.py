"""API routes, one module per resource.

Path parameters that are ids (messages, batches, OTP challenges: 32 lower-case hex characters)
use the `id` convertor, so `/sms/send` is never read as the message `send`: a wrong method on
a known path is a 405 naming the right one, not a 404 for a message that cannot exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import BaseRoute, Route


class IdConvertor(Convertor[str]):
    regex = "[0-9a-f]{32}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", IdConvertor())


def all_routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """An app's routes, those of its included routers too."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from all_routes(included.routes)
        else:
            yield route


def allowed_methods(routes: Sequence[BaseRoute], path: str) -> list[str]:
    """Every method some route takes on `path` (for `Allow`), in a stable order."""
    methods = {
        method
        for route in all_routes(routes)
        if isinstance(route, Route) and route.methods and route.path_regex.match(path)
        for method in route.methods
    }
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))
