"""Every carrier adapter smsq knows, by its `type_name`: the one place an adapter is listed.

The settings' choices (`SMSQ_CARRIER`), the carriers file's `type`, building carriers
(`worker.carriers.registry`), their health probes and their receipt authentication all look
adapters up here. The built-in ones (`BUILT_IN`) are registered when this module is imported;
an adapter defined elsewhere registers its class with `register` when it is imported.
"""

from __future__ import annotations

import re
from typing import Any

from worker.carriers.base import CarrierAdapter, ReceiptAuth
from worker.carriers.http import HttpCarrier
from worker.carriers.kannel import KannelCarrier
from worker.carriers.options import SignedReceipts
from worker.carriers.sim import SimCarrier
from worker.carriers.smpp import SmppCarrier
from worker.carriers.twilio import TwilioCarrier

Adapter = type[CarrierAdapter[Any]]

TYPE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    """Add an adapter class under its `type_name` (usable as a class decorator); TypeError
    when its declarations do not hold together or another class has the name."""
    name = getattr(adapter, "type_name", "")
    if not TYPE_NAME.match(name):
        raise TypeError(f"{adapter.__name__}.type_name {name!r} must match {TYPE_NAME.pattern}")
    if ADAPTERS.get(name, adapter) is not adapter:
        raise TypeError(f"carrier type {name!r} is taken by {ADAPTERS[name].__name__}")
    if not hasattr(adapter, "submits_whole_text"):
        raise TypeError(f"{adapter.__name__} must declare submits_whole_text")
    signs = adapter.receipt_auth is ReceiptAuth.RECEIPT_SECRET
    if signs != issubclass(adapter.Options, SignedReceipts):
        raise TypeError(
            f"{adapter.__name__}: receipt_auth RECEIPT_SECRET goes with options that are "
            "SignedReceipts (a `receipt_secret` key), and only with them"
        )
    ADAPTERS[name] = adapter
    return adapter


def unregister(type_name: str) -> None:
    """Remove an adapter (tests that register a toy one)."""
    ADAPTERS.pop(type_name, None)


def adapter_for(type_name: str) -> Adapter:
    """The adapter class called `type_name`; ValueError naming the known ones."""
    try:
        return ADAPTERS[type_name]
    except KeyError:
        known = ", ".join(type_names())
        raise ValueError(f"unknown carrier type {type_name!r} (known: {known})") from None


def type_names() -> tuple[str, ...]:
    """Every registered carrier type, sorted."""
    return tuple(sorted(ADAPTERS))


# The adapters that ship with smsq.
BUILT_IN: tuple[Adapter, ...] = (
    SimCarrier, HttpCarrier, KannelCarrier, TwilioCarrier, SmppCarrier
)
for _adapter in BUILT_IN:
    register(_adapter)
