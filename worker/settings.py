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
    data_dir: str = ".smsq"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str | None = None
    max_body_bytes: int = 1_048_576

    # Server key for keyed hashes (API keys, OTP codes). `smsq up` generates one under data_dir.
    secret_key: SecretStr = SecretStr("")

    carrier: Literal["sim", "http", "kannel", "twilio"] = "sim"
    carrier_url: str = "http://127.0.0.1:8025"
    carrier_username: str = ""
    carrier_password: SecretStr = SecretStr("")
    carrier_connect_timeout: float = 3.0
    carrier_read_timeout: float = 10.0

    default_from: str = "smsq"

    dlr_connect_timeout: float = 3.0
    dlr_read_timeout: float = 10.0
    # CIDR ranges receipts may go to although they are not public (development, tests).
    dlr_allow_private: Annotated[list[str], NoDecode] = Field(default_factory=list)

    worker_concurrency: int = 32
    log_level: str = "INFO"

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
