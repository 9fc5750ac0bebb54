"""Campaigns: expand a batch request into messages, ingest them in pipelined chunks, count, cancel.

Keys:  smsq:batch:{id}      hash {id, key_id, created_at, total, accepted, rejected, priority}
       smsq:batch:{id}:ids  list of the batch's message ids, in request order
Counters are derived from the messages' own states when asked (one pipelined read per 1,000
messages), so they can never drift from the truth.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pydantic

from producer.quiet_hours import QuietHours, release_time
from producer.schemas import BatchRequest, Recipient, SendRequest
from producer.submission import accept_messages
from producer.validation import build_message
from worker.batch_progress import count_batch, message_ids, watch
from worker.clock import now_ms
from worker.contract import CANCELLABLE_STATUSES, MessageStatus
from worker.errors import NotFoundError, OptedOutError, ValidationError
from worker.geo import GeoPermissions
from worker.optouts import OptOuts
from worker.queueing import CeleryPublisher
from worker.settings import Settings
from worker.store import Message, Store
from worker.store.keys import batch_ids_key, batch_key

CHUNK = 1000
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COMMON = (
    "from", "dlr", "dlr-level", "dlr-url", "dlr-method", "dlr-batch", "coding", "priority",
    "send_at", "validity", "max_segments",
)  # fmt: skip


def render(template: str, variables: Mapping[str, Any]) -> str:
    """`{name}` → its value; a variable the recipient lacks is a ValidationError naming it."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ValidationError(
                f"no value for {{{name}}}", field=f"vars.{name}", code="missing_var"
            )
        return str(variables[name])

    return _VARIABLE.sub(substitute, template)


def expand(
    request: BatchRequest, items: Sequence[Any] | None = None
) -> Iterator[dict[str, Any] | ValidationError]:
    """One send body per message or recipient of `items` (validated list items of the request,
    or the errors of invalid ones; by default its own list), or the error that makes that
    recipient invalid."""
    fields = request.model_dump(by_alias=True, exclude={"messages", "recipients"})
    common = {k: v for k, v in fields.items() if k in _COMMON and v is not None}
    listed: Sequence[Any] = (
        (request.messages or request.recipients or []) if items is None else items
    )
    for item in listed:
        if isinstance(item, ValidationError):
            yield item
        elif request.messages is not None:
            yield {**common, **item}
        else:
            yield _recipient_body(request, common, item)


def _recipient_body(
    request: BatchRequest, common: dict[str, Any], recipient: str | Recipient
) -> dict[str, Any] | ValidationError:
    """The send body of one templated recipient, or why it has none."""
    to, variables = (
        (recipient, {}) if isinstance(recipient, str) else (recipient.to, recipient.vars)
    )
    try:
        content = render(request.content or "", {"to": to, **variables})
    except ValidationError as exc:
        return exc
    client_ref = None if isinstance(recipient, str) else recipient.client_ref
    return {**common, "to": to, "content": content, "client_ref": client_ref}


@dataclass
class IngestResult:
    batch_id: str
    accepted: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    held: int = 0  # messages rescheduled out of the recipients' quiet hours


def _reject(index: int, body: Mapping[str, Any] | None, exc: ValidationError) -> dict[str, Any]:
    to = body.get("to") if isinstance(body, Mapping) else None
    return {
        "index": index,
        "to": to,
        "error": {"code": exc.code, "message": exc.message, "field": exc.field},
    }


def _hold_for_quiet_hours(message: Message, quiet: QuietHours) -> Message:
    """Reschedule a message that would arrive during the recipient's quiet hours."""
    start = message.send_at or message.created_at
    release = release_time(message.to, start, quiet)
    if release is None:
        return message
    validity = message.validity_until + (release - start) if message.validity_until else None
    return replace(
        message, status=MessageStatus.SCHEDULED, send_at=release, validity_until=validity
    )


def _validated(
    index: int,
    body: dict[str, Any] | ValidationError,
    settings: Settings,
    key_id: str,
    batch_id: str,
    quiet: QuietHours | None = None,
    geo: GeoPermissions | None = None,
) -> Message | dict[str, Any]:
    if isinstance(body, ValidationError):
        return _reject(index, None, body)
    try:
        parsed = SendRequest.model_validate({k: v for k, v in body.items() if v is not None})
        message, _ = build_message(parsed, settings, key_id=key_id, batch_id=batch_id, geo=geo)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"]) or None
        return _reject(
            index, body, ValidationError(first["msg"], field=field_name, code=first["type"])
        )
    except ValidationError as exc:
        return _reject(index, body, exc)
    return _hold_for_quiet_hours(message, quiet) if quiet else message


def ingest(
    store: Store,
    publisher: CeleryPublisher,
    settings: Settings,
    bodies: Iterable[dict[str, Any] | ValidationError],
    *,
    key_id: str,
    batch_id: str,
    quiet: QuietHours | None = None,
    geo: GeoPermissions | None = None,
    result: IngestResult | None = None,
) -> IngestResult:
    """Validate each body, then store and publish the valid ones in pipelined chunks; with
    `result`, the bodies continue an ingest (their indexes follow its earlier ones)."""
    result = result or IngestResult(batch_id)
    chunk: list[Message] = []
    places: list[int] = []  # each message's index in the request
    geo = geo or GeoPermissions.for_key((), settings)  # the deployment's, built once
    for index, body in enumerate(bodies, start=len(result.accepted) + len(result.rejected)):
        outcome = _validated(index, body, settings, key_id, result.batch_id, quiet, geo)
        if isinstance(outcome, Message):
            result.held += outcome.status == MessageStatus.SCHEDULED and outcome.send_at is not None
            chunk.append(outcome)
            places.append(index)
            if len(chunk) >= CHUNK:
                _flush(store, publisher, result, chunk, settings.send_chunk, places)
        else:
            result.rejected.append(outcome)
    _flush(store, publisher, result, chunk, settings.send_chunk, places)
    return result


def _flush(
    store: Store,
    publisher: CeleryPublisher,
    result: IngestResult,
    chunk: list[Message],
    per_task: int,
    places: list[int],
) -> None:
    """Store and queue one chunk, but its messages to numbers that opted out (each rejected
    with `opted_out`, one round trip for the chunk); its send tasks carry up to `per_task`
    ids (`sms.send_many`)."""
    if not chunk:
        return
    refused = OptOuts(store.redis).refused(chunk[0].key_id, [m.to for m in chunk])
    sending = [m for m, no in zip(chunk, refused, strict=True) if not no]
    for message, index, no in zip(chunk, places, refused, strict=True):
        if no:
            result.rejected.append(_reject(index, {"to": message.to}, OptedOutError(message.to)))
    chunk.clear()
    places.clear()
    if not sending:
        return
    ids = [m.id for m in sending]
    store.redis.rpush(batch_ids_key(result.batch_id), *ids)
    accept_messages(store, publisher, sending, chunk=per_task)
    result.accepted.extend(ids)


def claim_batch(
    store: Store,
    batch_id: str | None,
    key_id: str,
    priority: str,
    callback_url: str | None = None,
) -> str:
    """A new batch, or an existing one of the same key to append a chunk to."""
    batch_id = batch_id or uuid.uuid4().hex
    key = batch_key(batch_id)
    store.redis.hsetnx(key, "key_id", key_id)
    if store.redis.hget(key, "key_id") != key_id:
        raise NotFoundError("no such batch")
    pipe = store.redis.pipeline(transaction=True)
    pipe.hsetnx(key, "id", batch_id)
    pipe.hsetnx(key, "created_at", str(now_ms()))
    pipe.hsetnx(key, "priority", priority)
    if callback_url:
        pipe.hset(key, "callback_url", callback_url)
        watch(pipe, batch_id, now_ms() + 1000)
    pipe.execute()
    return batch_id


def record_batch(store: Store, result: IngestResult) -> None:
    """Add one ingested chunk's counts to its batch."""
    pipe = store.redis.pipeline(transaction=True)
    key = batch_key(result.batch_id)
    pipe.hincrby(key, "total", len(result.accepted) + len(result.rejected))
    pipe.hincrby(key, "accepted", len(result.accepted))
    pipe.hincrby(key, "rejected", len(result.rejected))
    pipe.execute()


def _batch_fields(store: Store, batch_id: str, key_id: str) -> dict[str, str]:
    fields = cast(dict[str, str], store.redis.hgetall(batch_key(batch_id)))
    if not fields or fields.get("key_id") != key_id:
        raise NotFoundError("no such batch")
    return fields


def batch_status(store: Store, batch_id: str, key_id: str) -> dict[str, Any]:
    """Live counters of a batch, read from its messages' states."""
    return count_batch(store.redis, batch_id, _batch_fields(store, batch_id, key_id))


CANCELLABLE = CANCELLABLE_STATUSES


def batch_ids(store: Store, batch_id: str, key_id: str) -> Iterator[list[str]]:
    """The ids of the key's batch, a chunk at a time (NotFoundError for others' batches)."""
    _batch_fields(store, batch_id, key_id)
    yield from message_ids(store.redis, batch_id)
