"""Typed settings from `SMSQ_*` environment variables, read once per process.

Nothing else in smsq reads `os.environ`.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


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
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    max_batch_body_bytes: int = 64 * 1_048_576

    # Server key for keyed hashes (API keys, OTP codes). `smsq up` generates one under data_dir.
    secret_key: SecretStr = SecretStr("")

    carrier: Literal["sim", "http", "kannel", "twilio"] = "sim"
    sim_port: int = 8025  # where `smsq up` runs the carrier simulator
    carrier_url: str = "http://127.0.0.1:8025"
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
    carrier_dlr_mask: int = Field(19, ge=1, le=63)  # Kannel: 1 + 2 + 16
    # Shared limits and the circuit breaker (docs/carriers.md). With a rate or concurrency
    # set, the single carrier gets the limiter and the breaker too.
    carrier_rate: float = Field(0.0, ge=0)  # messages per second across all workers; 0 = none
    carrier_burst: int = Field(1, ge=1)
    carrier_concurrency: int = Field(0, ge=0)  # requests in flight across all workers; 0 = none
    carrier_max_wait: float = Field(0.5, ge=0)  # longer waits go through the scheduler
    carrier_breaker_failures: int = Field(5, ge=0)  # consecutive failures that open; 0 = off
    carrier_breaker_cooldown: float = Field(30.0, gt=0)  # seconds open before a trial
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

    dlr_connect_timeout: float = 3.0
    dlr_read_timeout: float = 10.0
    # CIDR ranges receipts may go to although they are not public (development, tests).
    dlr_allow_private: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # `dlr-batch` receipts (docs/reliability.md §5): at most this many per POST, and sent
    # at least this often (milliseconds) while some wait.
    dlr_batch_max: int = Field(100, ge=1, le=10_000)
    dlr_batch_window_ms: int = Field(200, ge=1, le=60_000)

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
    # `smsq up`: worker processes for each of the normal and bulk lanes (set it to the cores).
    lane_processes: int = Field(1, ge=1, le=64)
    log_level: str = "INFO"

    # OTP (docs/otp.md). A limit is "at most N sends per window seconds" over a sliding
    # window; N = 0 turns that limit off. Scheduled resends count too.
    otp_cooldown_seconds: int = Field(30, ge=0)  # between two sends to one (key, number, purpose)
    otp_max_attempts: int = Field(5, ge=1, le=5)  # checks per code
    # How long GET /otp/{id} still answers after a code expired.
    otp_retention_seconds: int = Field(24 * 3600, ge=60)
    otp_limit_number: int = Field(5, ge=0)
    otp_limit_number_window: int = Field(3600, ge=1)
    otp_limit_prefix: int = Field(20, ge=0)  # the number without its last 4 digits
    otp_limit_prefix_window: int = Field(3600, ge=1)
    otp_limit_key: int = Field(3000, ge=0)  # per API key
    otp_limit_key_window: int = Field(60, ge=1)
    otp_limit_country: int = Field(1000, ge=0)  # per destination region (ISO 3166, e.g. DE)
    otp_limit_country_window: int = Field(60, ge=1)
    # ISO 3166 regions that codes may go to (comma-separated in the environment); empty = all.
    otp_allowed_countries: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # phonenumbers number types refused as OTP destinations (toll fraud).
    otp_blocked_number_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["PREMIUM_RATE", "SHARED_COST"]
    )

    @field_validator("dlr_allow_private", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("dlr_allow_private")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # loud when wrong
        return value

    @field_validator("otp_allowed_countries", "otp_blocked_number_types", mode="before")
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
