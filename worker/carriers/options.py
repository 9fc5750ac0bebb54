"""Adapter options: the keys of a `[carriers.NAME]` table that belong to its adapter.

Every carrier table has the common keys (`type`, `rate`, `burst`, `concurrency`,
`breaker_failures`, `breaker_cooldown`: `worker.carriers.config.CarrierConfig`); the rest are
the adapter's, validated by its `Options` model, which forbids keys it does not know. The
pieces adapters share are here to mix in: where an HTTP carrier is (`HttpEndpoint`), how to
log in (`Credentials`, `Password`) and the secret receipt requests are signed with
(`SignedReceipts`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from worker.webhooks import decode_secret


class AdapterOptions(BaseModel):
    """The base of every adapter's options: frozen, unknown keys refused, and no input in
    error messages (a table holds passwords)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @property
    def address(self) -> str:
        """Where the carrier is, for reports (`smsq carriers check`): never credentials."""
        return "?"


class HttpEndpoint(AdapterOptions):
    """A carrier reached over HTTP(S) at `url`."""

    url: str

    @property
    def address(self) -> str:
        parts = urlsplit(self.url)  # host and port only: credentials may sit in the rest
        if parts.hostname is None:
            return "?"
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


class Password(AdapterOptions):
    """A password, or a file holding it (container secrets)."""

    password: SecretStr = SecretStr("")
    password_file: str | None = None  # read when the adapter is built

    @property
    def secret(self) -> str:
        """The password, from `password_file` when one is named."""
        if self.password_file:
            return Path(self.password_file).read_text().strip()
        return self.password.get_secret_value()


class Credentials(Password):
    """A username and its password."""

    username: str = ""


class SignedReceipts(AdapterOptions):
    """For adapters with `ReceiptAuth.RECEIPT_SECRET`: the Standard Webhooks secret
    (`whsec_…`) the carrier signs its receipt requests with, besides the per-segment tokens in
    their URLs (`worker.receipts.tokens`); empty: tokens only."""

    receipt_secret: SecretStr = SecretStr("")

    @field_validator("receipt_secret")
    @classmethod
    def _check_receipt_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            decode_secret(value.get_secret_value())  # ValueError: not `whsec_` + base64
        return value
