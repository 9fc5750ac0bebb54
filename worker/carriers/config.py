"""Carrier configuration: named carriers and routes from a TOML file, or one carrier from env.

The file (`SMSQ_CARRIERS_FILE`, format in docs/carriers.md) names carriers under `[carriers.NAME]`
and lists `[[routes]]`; without it, the single carrier of `SMSQ_CARRIER*` is the whole config.
Both end up as one `CarriersConfig`, validated loudly when loaded.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from worker.settings import Settings
from worker.smpp.config import SMPP_KEYS, SmppConfig
from worker.webhooks import decode_secret

CarrierType = Literal["sim", "http", "kannel", "twilio", "smpp"]
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

# Carriers whose receipt requests may be signed with a `receipt_secret`.
SIGNING_TYPES = frozenset({"sim", "http"})
# Carriers that take the whole text and segment it themselves.
WHOLE_TEXT_TYPES = frozenset({"http", "twilio"})


class CarrierConfig(BaseModel):
    """One carrier account: the adapter, where and how to reach it, its limits and breaker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: CarrierType
    url: str = ""  # every type but smpp, which binds to `smpp.host` / `smpp.port`
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: str | None = None  # read at load time (container secrets)
    messaging_service: str = ""  # Twilio: MessagingServiceSid instead of `From`
    smsc: str = ""  # Kannel: smsc-id to route through
    dlr_mask: int = Field(27, ge=1, le=63)  # Kannel: 1 + 2 + 8 + 16 (docs/carriers.md)
    rate: float = Field(0.0, ge=0)  # messages per second, all workers together; 0 = no limit
    burst: int = Field(1, ge=1)
    concurrency: int = Field(0, ge=0)  # requests in flight, all workers together; 0 = no limit
    breaker_failures: int = Field(5, ge=0)  # consecutive failures that open it; 0 = no breaker
    breaker_cooldown: float = Field(30.0, gt=0)  # seconds open before a trial request
    # sim / http: a Standard Webhooks secret (`whsec_…`) the carrier signs its receipt
    # requests with, besides the per-segment tokens in their URLs (worker.receipts.tokens).
    receipt_secret: SecretStr = SecretStr("")
    # smpp: its own keys (`worker.smpp.config`), written flat beside the others in the file.
    smpp: SmppConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _nest_smpp_keys(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") == "smpp" and "smpp" not in data:
            own = {key: value for key, value in data.items() if key in SMPP_KEYS}
            rest = {key: value for key, value in data.items() if key not in SMPP_KEYS}
            return {**rest, "smpp": own}
        return data

    @model_validator(mode="after")
    def _url_or_bind(self) -> Self:
        if self.type != "smpp" and not self.url:
            raise ValueError(f"a {self.type} carrier needs a url")
        if (self.type == "smpp") != (self.smpp is not None):
            raise ValueError("host, port, system_id, bind… are for smpp carriers only")
        return self

    @field_validator("receipt_secret")
    @classmethod
    def _check_receipt_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            decode_secret(value.get_secret_value())  # ValueError: not `whsec_` + base64
        return value

    @model_validator(mode="after")
    def _receipt_secret_type(self) -> Self:
        if self.receipt_secret.get_secret_value() and self.type not in SIGNING_TYPES:
            raise ValueError(f"receipt_secret is for {sorted(SIGNING_TYPES)} carriers only")
        return self

    @property
    def submits_whole_text(self) -> bool:
        if self.smpp is not None:  # message_payload: the SMSC cuts the text itself
            return self.smpp.long_text == "payload"
        return self.type in WHOLE_TEXT_TYPES

    @property
    def secret(self) -> str:
        """The password, from `password_file` when one is named."""
        if self.password_file:
            return Path(self.password_file).read_text().strip()
        return self.password.get_secret_value()


class RouteConfig(BaseModel):
    """Destinations (prefixes and/or countries; neither = the default route) to carriers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    @property
    def submits_whole_text(self) -> bool:
        """True only when every carrier segments itself (then only whole texts are submitted)."""
        return all(c.submits_whole_text for c in self.carriers.values())


def single_carrier(settings: Settings) -> CarriersConfig:
    """The one carrier of `SMSQ_CARRIER*`, under its type's name, on a default route.
    `SMSQ_CARRIER_RECEIPT_SECRET` applies to a carrier type that signs receipts (sim, http):
    a deployment may set it once for whichever carrier it runs."""
    signs = settings.carrier in SIGNING_TYPES
    config = CarrierConfig(
        type=settings.carrier,
        url=settings.carrier_url,
        username=settings.carrier_username,
        password=settings.carrier_password,
        messaging_service=settings.carrier_messaging_service,
        smsc=settings.carrier_smsc,
        dlr_mask=settings.carrier_dlr_mask,
        rate=settings.carrier_rate,
        burst=settings.carrier_burst,
        concurrency=settings.carrier_concurrency,
        breaker_failures=settings.carrier_breaker_failures,
        breaker_cooldown=settings.carrier_breaker_cooldown,
        receipt_secret=settings.carrier_receipt_secret if signs else SecretStr(""),
    )
    return CarriersConfig(
        carriers={settings.carrier: config},
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
