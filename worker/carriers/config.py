"""Carrier configuration: named carriers and routes from a TOML file, or one carrier from env.

The file (`SMSQ_CARRIERS_FILE`, format in docs/carriers.md) names carriers under `[carriers.NAME]`
and lists `[[routes]]`; without it, the single carrier of `SMSQ_CARRIER*` is the whole config.
Both end up as one `CarriersConfig`, validated loudly when loaded. A carrier's table has the
common keys of `CarrierConfig`; the rest are its adapter's options, validated by the adapter's
own model (`worker.carriers.adapters`).
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.carriers.adapters import Adapter, adapter_for
from worker.carriers.options import AdapterOptions, SignedReceipts
from worker.settings import Settings

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class CarrierConfig(BaseModel):
    """One carrier account: its adapter (`type`) and that adapter's options, its shared limits
    and breaker. Built from a flat table: every key that is not one of the fields below is the
    adapter's (`options`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: str
    rate: float = Field(0.0, ge=0)  # messages per second, all workers together; 0 = no limit
    burst: int = Field(1, ge=1)
    concurrency: int = Field(0, ge=0)  # requests in flight, all workers together; 0 = no limit
    breaker_failures: int = Field(5, ge=0)  # consecutive failures that open it; 0 = no breaker
    breaker_cooldown: float = Field(30.0, gt=0)  # seconds open before a trial request
    # The adapter's keys, validated by its `Options` (unknown keys refused).
    options: SerializeAsAny[AdapterOptions]

    def __init__(self, **table: Any) -> None:
        """From a flat table, as in the carriers file: `CarrierConfig(type="kannel",
        url="http://kannel:13013", rate=50)`."""
        super().__init__(**table)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "options" in data:
            return data
        common = {key: value for key, value in data.items() if key in cls.model_fields}
        common["options"] = {k: v for k, v in data.items() if k not in cls.model_fields}
        return common

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        adapter_for(value)  # ValueError naming the known types
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _adapter_options(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("type")
        if kind is None:  # refused already: no options to check against
            return AdapterOptions()
        model = adapter_for(kind).Options
        if isinstance(value, model):
            return value
        unknown = sorted(set(value) - set(model.model_fields)) if isinstance(value, dict) else []
        if unknown:  # say which keys this type does have (another type's key is a usual slip)
            raise ValueError(
                f"{', '.join(unknown)}: not for a {kind} carrier, whose own keys are "
                f"{', '.join(model.model_fields)}"
            )
        return model.model_validate(value)

    @property
    def adapter(self) -> Adapter:
        """The adapter class of `type`."""
        return adapter_for(self.type)

    @property
    def receipt_secret(self) -> SecretStr:
        """The secret the carrier signs its receipt requests with (adapters whose options are
        `SignedReceipts`); empty for the others."""
        if isinstance(self.options, SignedReceipts):
            return self.options.receipt_secret
        return SecretStr("")


# The keys every carrier table has besides `type` (`SMSQ_CARRIER_<KEY>` for a single carrier).
COMMON_KEYS = tuple(key for key in CarrierConfig.model_fields if key not in ("type", "options"))


class RouteConfig(BaseModel):
    """Destinations (prefixes and/or countries; neither = the default route) to carriers."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    prefixes: tuple[str, ...] = ()  # E.164 starts, e.g. "+49", "+4915"
    countries: tuple[str, ...] = ()  # ISO 3166 regions, e.g. "DE"
    carriers: tuple[str, ...] = Field(min_length=1)  # failover order
    # Share of first picks per carrier (same length as `carriers`); the rest follow in order.
    weights: tuple[float, ...] | None = None

    @field_validator("prefixes")
    @classmethod
    def _normalise_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            if not re.fullmatch(r"\+?[0-9]{1,15}", prefix):
                raise ValueError(f"prefix {prefix!r} is not digits (with an optional '+')")
        return tuple("+" + prefix.lstrip("+") for prefix in value)

    @field_validator("countries")
    @classmethod
    def _upper_countries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(country.upper() for country in value)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.carriers)) != len(self.carriers):
            raise ValueError("a route names a carrier twice")
        if self.weights is not None:
            if len(self.weights) != len(self.carriers):
                raise ValueError("weights must have one entry per carrier")
            if any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
                raise ValueError("weights must be >= 0 and not all 0")
        return self

    @property
    def is_default(self) -> bool:
        return not self.prefixes and not self.countries


class CarriersConfig(BaseModel):
    """Every configured carrier by name, and the routes between them."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    carriers: dict[str, CarrierConfig] = Field(min_length=1)
    routes: tuple[RouteConfig, ...] = Field(min_length=1)
    max_wait: float = Field(0.5, ge=0)  # longest in-place wait for a rate-limit slot, seconds

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in self.carriers:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"carrier name {name!r} must match {NAME_PATTERN.pattern}")
        for route in self.routes:
            unknown = [name for name in route.carriers if name not in self.carriers]
            if unknown:
                raise ValueError(f"route names unknown carriers: {unknown}")
        if sum(route.is_default for route in self.routes) > 1:
            raise ValueError("at most one default route (without prefixes or countries)")
        return self


def single_carrier(settings: Settings) -> CarriersConfig:
    """The one carrier of `SMSQ_CARRIER*`, under its type's name, on a default route.

    Each common key and each option of the adapter is `SMSQ_CARRIER_<KEY>` where the settings
    have one; the rest keep their defaults. So `SMSQ_CARRIER_RECEIPT_SECRET` reaches only a
    carrier type that signs receipts (sim, http): a deployment may set it once for whichever
    carrier it runs.
    """
    table: dict[str, object] = {"type": settings.carrier}
    for key in (*COMMON_KEYS, *adapter_for(settings.carrier).Options.model_fields):
        if f"carrier_{key}" in Settings.model_fields:
            table[key] = getattr(settings, f"carrier_{key}")
    return CarriersConfig(
        carriers={settings.carrier: CarrierConfig.model_validate(table)},
        routes=(RouteConfig(carriers=(settings.carrier,)),),
        max_wait=settings.carrier_max_wait,
    )


def load_carriers(settings: Settings) -> CarriersConfig:
    """The carriers file if one is set, else the single carrier; ValueError when invalid."""
    if settings.carriers_file:
        path = Path(settings.carriers_file)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as exc:
            raise ValueError(f"carriers file {path}: {exc.strerror}") from exc
        return _parse_file(str(path), mtime)
    return single_carrier(settings)


@lru_cache(maxsize=8)
def _parse_file(path: str, mtime_ns: int) -> CarriersConfig:
    """Parsed once per version of the file (receipts look carriers up by name, often)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"carriers file {path}: {exc}") from exc
    return CarriersConfig.model_validate(data)
