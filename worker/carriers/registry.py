"""Build the configured carrier adapter from settings and the process's shared `httpx.Client`."""

from __future__ import annotations

import base64
from typing import get_args
from urllib.parse import urlsplit

import httpx

from worker.carriers.base import Carrier
from worker.carriers.http import HttpCarrier
from worker.carriers.sim import SimCarrier
from worker.errors import NotFoundError
from worker.settings import Settings

CARRIER_NAMES: tuple[str, ...] = get_args(Settings.model_fields["carrier"].annotation)


def build_carrier(settings: Settings, client: httpx.Client) -> Carrier:
    """The adapter for `settings.carrier`; ValueError for carriers not implemented yet."""
    return carrier_for_name(settings.carrier, settings, client)


def carrier_for_name(name: str, settings: Settings, client: httpx.Client) -> Carrier:
    """The adapter called `name` (e.g. for `/carriers/{name}/dlr`), configured from settings.

    Raises `NotFoundError` for a name smsq does not know, ValueError for a known carrier
    that has no adapter yet.
    """
    if name == "sim":
        return SimCarrier(client, settings.carrier_url, name=name)
    if name == "http":
        return HttpCarrier(
            client, _http_url(settings.carrier_url), name=name, auth_header=_auth_header(settings)
        )
    if name in CARRIER_NAMES:
        raise ValueError(f"carrier {name!r} is not yet supported")
    raise NotFoundError(f"no carrier named {name[:32]!r}")


def _http_url(url: str) -> str:
    """A bare base URL points at smsq's own send endpoint, the default request shape."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/sms/send"
    return url


def _auth_header(settings: Settings) -> tuple[str, str] | None:
    """Basic auth with a username, else a bearer token (an upstream smsq API key)."""
    password = settings.carrier_password.get_secret_value()
    if settings.carrier_username:
        pair = f"{settings.carrier_username}:{password}".encode()
        return ("authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    if password:
        return ("authorization", f"Bearer {password}")
    return None
