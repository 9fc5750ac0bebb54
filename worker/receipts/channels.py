"""Receipt channels: how receipts travel to a client's `dlr-url`.

A channel turns one receipt (or, for a channel that batches, several) into one request and
says what its signature covers (Standard Webhooks signs `{webhook-id}.{timestamp}.{content}`):

- `POST` (the default): the receipt as compact JSON; the signed content is the body.
- `GET`: the receipt's scalar fields as query parameters after any query the URL already has,
  one level of nesting flattened with `_` (`segments.total` → `segments_total`), `None` left
  out (an absent parameter means null), booleans `true`/`false`; the signed content is the
  exact query string sent, without the leading `?`.
- `POST` with `dlr-batch`: one POST of `{"receipts": [...]}` for up to
  `EngineConfig.batch_max` receipts to the same URL, signed as a whole under its own id.

`dlr-method` names a channel (`CHANNELS`), case-insensitively.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlencode

import httpx
import orjson

JSON_HEADERS = (("content-type", "application/json"),)


@lru_cache(maxsize=4096)
def parse_url(url: str) -> httpx.URL:
    """`httpx.URL(url)`, parsed once per distinct URL (a client's receipts share a few)."""
    return httpx.URL(url)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One request to a client: what is sent and what its signature covers."""

    method: Literal["GET", "POST"]
    url: httpx.URL
    body: bytes
    signed: bytes
    webhook_id: str
    headers: tuple[tuple[str, str], ...] = ()


class Channel(Protocol):
    """Encodes receipts into one request."""

    name: str
    batches: bool  # takes several receipts per request

    def encode(
        self, url: str, receipts: Sequence[Mapping[str, Any]], webhook_id: str
    ) -> Outgoing: ...


class JsonPost:
    name = "POST"
    batches = False

    def encode(self, url: str, receipts: Sequence[Mapping[str, Any]], webhook_id: str) -> Outgoing:
        (receipt,) = receipts
        body = orjson.dumps(dict(receipt))
        return Outgoing("POST", parse_url(url), body, body, webhook_id, JSON_HEADERS)


class QueryGet:
    name = "GET"
    batches = False

    def encode(self, url: str, receipts: Sequence[Mapping[str, Any]], webhook_id: str) -> Outgoing:
        (receipt,) = receipts
        target = parse_url(url)
        ours = urlencode(flatten_query(receipt), quote_via=quote).encode("ascii")
        query = target.query + b"&" + ours if target.query else ours
        final = target.copy_with(query=query)
        return Outgoing("GET", final, b"", final.query, webhook_id)


class JsonBatch:
    name = "POST"
    batches = True

    def encode(self, url: str, receipts: Sequence[Mapping[str, Any]], webhook_id: str) -> Outgoing:
        body = orjson.dumps({"receipts": [dict(receipt) for receipt in receipts]})
        return Outgoing("POST", parse_url(url), body, body, webhook_id, JSON_HEADERS)


CHANNELS: dict[str, Channel] = {"POST": JsonPost(), "GET": QueryGet()}
BATCH = JsonBatch()


def channel_for(method: str, *, batch: bool = False) -> Channel:
    """The channel a receipt travels by: its `dlr-method`, batched when asked (POST only)."""
    channel = CHANNELS.get(method.upper(), CHANNELS["POST"])
    return BATCH if batch and channel.name == "POST" else channel


def flatten_query(payload: Mapping[str, object]) -> list[tuple[str, str]]:
    """The payload's scalar fields as query parameters, one level of nesting joined with `_`."""
    pairs: list[tuple[str, str]] = []
    for key, value in payload.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                _append_scalar(pairs, f"{key}_{sub_key}", sub_value)
        else:
            _append_scalar(pairs, key, value)
    return pairs


def _append_scalar(pairs: list[tuple[str, str]], name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        pairs.append((name, "true" if value else "false"))
    elif isinstance(value, str | int | float):
        pairs.append((name, str(value)))
    else:
        raise TypeError(f"receipt field {name!r} is not a scalar: {type(value).__name__}")
