"""The development API key of a data directory: made by the first `smsq up`, kept (its id and
the key itself in `<data_dir>/dev-key`, mode 0600), printed on every start with its receipt
signing secret, used by the CLI when no key is given; `smsq keys rotate` replaces it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from producer.instance import DataDir, dev_key_file
from worker.embedded_redis import write_private
from worker.keys import KeyStore

NAME = "smsq-up"


@dataclass(frozen=True, slots=True)
class DevKey:
    id: str
    api_key: str
    secret: str  # the newest receipt-signing secret


def ensure(keys: KeyStore, data: DataDir) -> DevKey:
    """The data directory's key, made now if it has none (or its key is gone or revoked)."""
    saved = dev_key_file(data)
    record = keys.authenticate(saved["api_key"]) if "api_key" in saved else None
    if record is None or record.id != saved.get("id"):
        return _create(keys, data)
    return DevKey(record.id, saved["api_key"], keys.signing_secrets(record.id)[0])


def rotate(keys: KeyStore, data: DataDir) -> DevKey:
    """A new key for the data directory; the old one is revoked."""
    old = dev_key_file(data).get("id")
    fresh = _create(keys, data)
    if old:
        keys.revoke(old)
    return fresh


def _create(keys: KeyStore, data: DataDir) -> DevKey:
    created = keys.create(NAME)
    write_private(data.dev_key, json.dumps({"id": created.key.id, "api_key": created.api_key}))
    return DevKey(created.key.id, created.api_key, created.webhook_secret)
