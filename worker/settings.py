"""Typed settings from `SMSQ_*` environment variables, read once per process.

Nothing else in smsq reads `os.environ`.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# An OTP ceiling per destination is this many keys' worth of the per-key limit by default.
CEILING_FACTOR = 5
# Geo permissions (worker.geo, docs/security.md): where messages may go unless a deployment or
# a key says otherwise. North America, the UK and its Crown Dependencies (which share +44),
# western and northern Europe, Australia and New Zealand: large, regulated markets that SMS
# pumping rarely targets. Every other country is one setting away, not open by default
# (Twilio too enables only a few countries on a new account).
DEFAULT_ALLOWED_COUNTRIES = (
    "US", "CA", "GB", "GG", "JE", "IM", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "LU", "ES",
    "PT", "IT", "DK", "SE", "NO", "FI", "IS", "PL", "CZ", "AU", "NZ",
)  # fmt: skip


def simulator_url(port: int) -> str:
    """Where `smsq up` runs the carrier simulator."""
    return f"http://127.0.0.1:{port}"


class Settings(BaseSettings):
    """Everything an smsq process can be told from outside."""

    model_config = SettingsConfigDict(env_prefix="SMSQ_", extra="ignore", frozen=True)

    redis_url: str | None = None
    broker_url: str | None = None
    # Sentinel service name for `sentinel://h1:26379;sentinel://h2:26379` URLs (worker.redis_urls).
    redis_sentinel_service: str = "mymaster"
    data_dir: str = ".smsq"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # `smsq up`: API processes sharing the port (one Python process uses one core at most).
    api_processes: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    max_batch_body_bytes: int = 64 * 1_048_576
    # Slow and numerous clients (producer/server.py): seconds a connection has to send a
    # request's headers, and connections or requests in flight per API process before new
    # requests get 503 (0 = no limit).
    api_header_timeout: float = Field(10.0, gt=0)
    api_max_connections: int = Field(1000, ge=0)

    # Bearer token `/metrics` asks for (Prometheus `authorization` / `bearer_token_file`);
    # empty = open, as is usual for a scrape port kept on the private network.
    metrics_token: SecretStr = SecretStr("")

    # Server key for keyed hashes (API keys, OTP codes). `smsq up` generates one under data_dir.
    secret_key: SecretStr = SecretStr("")
    # The API key `smsq send` / `smsq batch` present; default: the running `smsq up`'s own.
    api_key: SecretStr = SecretStr("")

    # The single carrier's adapter: a registered type (worker/carriers/adapters.py: sim, the
    # default, http, kannel, twilio).
    carrier: str = "sim"
    sim_port: int = 8025  # where `smsq up` runs the carrier simulator
    # Default: the simulator where `smsq up` runs it (SMSQ_SIM_PORT).
    carrier_url: str = Field(default_factory=lambda given: simulator_url(given["sim_port"]))
    carrier_username: str = ""
    carrier_password: SecretStr = SecretStr("")
    carrier_connect_timeout: float = 3.0
    carrier_read_timeout: float = 10.0
    # Several named carriers and routes (docs/carriers.md); when set, SMSQ_CARRIER* above
    # (but the timeouts) are not used.
    carriers_file: str | None = None
    # Adapter details of the single carrier (the same keys as in the carriers file).
    carrier_messaging_service: str = ""  # Twilio MessagingServiceSid, instead of `From`
    carrier_smsc: str = ""  # Kannel: the smsc-id to send through
    carrier_dlr_mask: int = Field(27, ge=1, le=63)  # Kannel: 1 + 2 + 8 + 16 (docs/carriers.md)
    # Shared limits and the circuit breaker (docs/carriers.md). With a rate or concurrency
    # set, the single carrier gets the limiter and the breaker too.
    carrier_rate: float = Field(0.0, ge=0)  # messages per second across all workers; 0 = none
    carrier_burst: int = Field(1, ge=1)
    carrier_concurrency: int = Field(0, ge=0)  # requests in flight across all workers; 0 = none
    carrier_max_wait: float = Field(0.5, ge=0)  # longer waits go through the scheduler
    carrier_breaker_failures: int = Field(5, ge=0)  # consecutive failures that open; 0 = off
    carrier_breaker_cooldown: float = Field(30.0, gt=0)  # seconds open before a trial
    # A segment a gateway queued (Kannel's 202) whose SMSC has not answered this long (seconds)
    # is given up as `unknown`: the submission fails with `no_smsc_answer` (docs/reliability.md).
    reconcile_ack_deadline: float = Field(3600.0, gt=0)
    # Carrier receipts in (`/carriers/{name}/dlr`, docs/carriers.md "Authenticated receipts").
    # sim / http: the Standard Webhooks secret (`whsec_…`) the carrier signs receipts with.
    carrier_receipt_secret: SecretStr = SecretStr("")
    carrier_receipts_max: int = Field(1000, ge=1)  # receipts in one request; 413 beyond
    # Requests per second from one source address, per API process (GCRA); 0 = no limit.
    carrier_receipts_rate: float = Field(1000.0, ge=0)
    carrier_receipts_burst: int = Field(1000, ge=1)
    # Receipts for carrier ids not (yet) stored wait this long for them, at most this many.
    carrier_receipts_park_seconds: int = Field(600, ge=1, le=7 * 24 * 3600)
    carrier_receipts_park_max: int = Field(100_000, ge=0)

    default_from: str = "smsq"
    # ISO 3166 regions messages (SMS and OTP) may go to, comma-separated; `*` = every country.
    # A key's own list (`smsq keys create --countries`) replaces this one for that key.
    allowed_countries: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_COUNTRIES)
    )

    dlr_connect_timeout: float = 3.0
    # A receipt attempt's hard wall-clock deadline (resolve, connect, send, answer), seconds.
    dlr_timeout: float = Field(10.0, gt=0, le=60)
    # Fairness (docs/receipts.md): requests in flight per endpoint (an API key's dlr-url
    # origin), per API key and in all, per worker process.
    dlr_endpoint_concurrency: int = Field(4, ge=1, le=64)
    dlr_key_concurrency: int = Field(16, ge=1, le=1024)
    dlr_max_in_flight: int = Field(256, ge=1, le=10_000)
    # CIDR ranges receipts may go to although they are not public (development, tests).
    dlr_allow_private: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # `host:port` endpoints receipts never go to, even inside those ranges (`smsq up` lists
    # its API, simulator and Redis): `127.0.0.0/8:8025`, `[::1]:8000`, `localhost:6379`.
    dlr_deny: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # `dlr-batch` receipts (docs/reliability.md §5): at most this many per POST, and sent
    # at least this often (milliseconds) while some wait.
    dlr_batch_max: int = Field(100, ge=1, le=10_000)
    dlr_batch_window_ms: int = Field(200, ge=1, le=60_000)

    # Inbound (MO) messages and opt-outs (docs/inbound.md): the built-in keyword lists of these
    # languages (`worker.mo.keywords`: en, es, fr, de, it, pt), plus the words given here
    # (comma-separated; matched case- and accent-insensitively against the whole message).
    mo_languages: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["en"])
    mo_optout_keywords: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mo_optin_keywords: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The parts of a multipart MO are awaited this long (seconds); then what came is stored
    # and delivered, the missing parts marked.
    mo_reassembly_seconds: int = Field(300, ge=1, le=24 * 3600)

    worker_concurrency: int = 32
    # Message ids per send task of a batch (`sms.send_many`, one lane); 1 = a task per message.
    send_chunk: int = Field(16, ge=1, le=1000)
    # CPU priority of a worker that consumes only the bulk lane (os.nice increment, 0 = off):
    # on a saturated machine the OTP and normal lanes get the CPU first.
    bulk_worker_nice: int = Field(10, ge=0, le=19)
    # ... and of a worker that consumes only the otp lane (negative = first; needs root or
    # CAP_SYS_NICE, else it stays at 0 with a warning). Measured: OTP p99 under a draining
    # backlog 116–188 ms at 0, 20–52 ms at -10 (docs/performance.md).
    otp_worker_nice: int = Field(-10, ge=-20, le=0)
    # `smsq up`: worker processes for each lane but otp (normal, bulk, dlr, carrier-dlr).
    lane_processes: int = Field(1, ge=1, le=64)
    log_level: str = "INFO"

    # OTP (docs/otp.md). A limit is "at most N sends per window seconds" over a sliding
    # window; N = 0 turns that limit off. Scheduled resends count too.
    otp_cooldown_seconds: int = Field(30, ge=0)  # between two sends to one (key, number, purpose)
    otp_max_attempts: int = Field(5, ge=1, le=5)  # checks per code
    # How long GET /otp/{id} still answers after a code expired.
    otp_retention_seconds: int = Field(24 * 3600, ge=60)
    # Each API key has its own number, prefix and country limits (one tenant cannot use up
    # another's); the ceilings count every key together per destination, the SMS-pumping
    # backstop: by default CEILING_FACTOR times the per-key limit, when set above it (0 = off).
    otp_limit_number: int = Field(5, ge=0)
    otp_limit_number_window: int = Field(3600, ge=1)
    otp_ceiling_number: int | None = Field(None, ge=0)  # every key together, same window
    otp_limit_prefix: int = Field(20, ge=0)  # the number without its last 4 digits
    otp_limit_prefix_window: int = Field(3600, ge=1)
    otp_ceiling_prefix: int | None = Field(None, ge=0)
    otp_limit_country: int = Field(1000, ge=0)  # per destination region (ISO 3166, e.g. DE)
    otp_limit_country_window: int = Field(60, ge=1)
    otp_ceiling_country: int | None = Field(None, ge=0)
    otp_limit_key: int = Field(3000, ge=0)  # per API key, any destination
    otp_limit_key_window: int = Field(60, ge=1)
    otp_limit_key_daily: int = Field(20_000, ge=0)  # codes per API key per UTC day
    # Codes only: ISO 3166 regions they may go to, within the key's allowed countries (comma-
    # separated in the environment); empty = every allowed country.
    otp_allowed_countries: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # phonenumbers number types refused as OTP destinations (toll fraud).
    otp_blocked_number_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["PREMIUM_RATE", "SHARED_COST"]
    )

    @field_validator("dlr_allow_private", "dlr_deny", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mo_languages", "mo_optout_keywords", "mo_optin_keywords", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mo_languages")
    @classmethod
    def _check_languages(cls, value: list[str]) -> list[str]:
        from worker.mo.keywords import check_languages  # only here: settings stay cheap

        return check_languages(value)

    @field_validator("dlr_allow_private")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # loud when wrong
        return value

    @field_validator("dlr_deny")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        from worker.ssrf import parse_denied  # only here: settings stay cheap to import

        parse_denied(value)  # loud when wrong
        return value

    @field_validator("carrier")
    @classmethod
    def _check_carrier(cls, value: str) -> str:
        from worker.carriers.adapters import adapter_for  # only here: settings stay cheap to import

        adapter_for(value)  # loud when unknown, naming the known types
        return value

    @field_validator("allowed_countries")
    @classmethod
    def _check_countries(cls, value: list[str]) -> list[str]:
        from worker.geo import check_countries  # only here: settings stay cheap to import

        checked = list(check_countries(value))
        if not checked:
            raise ValueError("name the countries messages may go to (US,GB,...) or * for all")
        return checked

    @field_validator(
        "allowed_countries", "otp_allowed_countries", "otp_blocked_number_types", mode="before"
    )
    @classmethod
    def _split_otp_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("otp_blocked_number_types")
    @classmethod
    def _check_number_types(cls, value: list[str]) -> list[str]:
        import phonenumbers  # only here: settings stay cheap to import

        known = {n for n in dir(phonenumbers.PhoneNumberType) if n.isupper()}
        unknown = sorted({v.upper() for v in value} - known)
        if unknown:
            raise ValueError(f"unknown number types {unknown}; known: {sorted(known)}")
        return [v.upper() for v in value]

    @field_validator("otp_allowed_countries")
    @classmethod
    def _upper_countries(cls, value: list[str]) -> list[str]:
        return [v.upper() for v in value]

    @model_validator(mode="after")
    def _ceilings_above_limits(self) -> Settings:
        for scope in ("number", "prefix", "country"):
            limit, ceiling = getattr(self, f"otp_limit_{scope}"), self.otp_ceiling(scope)
            if limit and ceiling and ceiling <= limit:
                raise ValueError(
                    f"SMSQ_OTP_CEILING_{scope.upper()} ({ceiling}) must be above "
                    f"SMSQ_OTP_LIMIT_{scope.upper()} ({limit}): one key alone must not reach it"
                )
        return self

    def otp_ceiling(self, scope: Literal["number", "prefix", "country"]) -> int:
        """The OTP ceiling per destination `scope`: as set, else CEILING_FACTOR times the
        per-key limit."""
        ceiling: int | None = getattr(self, f"otp_ceiling_{scope}")
        limit: int = getattr(self, f"otp_limit_{scope}")
        return CEILING_FACTOR * limit if ceiling is None else ceiling

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.effective_redis_url

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
