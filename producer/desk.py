"""SMS on the producer side: send one message, accept a batch, cancel, read, list.

The twin of `producer.otp.OtpDesk`: the `/sms/*` routes, the Python library and the CLI all
call a `MessageDesk`, so a message is validated, stored and queued the same way whoever asks.
Calls made for an API key (`caller`) are admitted by `producer.gate`: a single send is checked,
charged and written in one round trip; the library passes no caller (no limits).

Everything here is synchronous and does I/O: the API runs it in its thread pool, never on the
event loop (`producer.api`). A batch is accepted in steps (`BatchIngest`), each bounded, so
that a 100,000-recipient batch holds neither a thread nor the interpreter for long.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import pydantic

from producer.batches import (
    CANCELLABLE,
    IngestResult,
    batch_ids,
    claim_batch,
    expand,
    ingest,
    record_batch,
)
from producer.body import parse_json_body, parse_model
from producer.gate import Gate, GuardedWrite, Refusal
from producer.idempotency import Idempotency
from producer.idempotency import idempotency_key as idempotency_key_of
from producer.listing import Filters, list_messages
from producer.quiet_hours import QuietHours
from producer.schemas import MAX_BATCH, BatchRequest, Recipient, SendRequest
from producer.submission import Job, accept_messages, stage_messages
from producer.validation import build_message, check_receipt_url
from producer.views import message_view
from worker.contract import MessageStatus
from worker.encoding import Summary
from worker.errors import ConflictError, NotFoundError, OptedOutError, ValidationError
from worker.geo import GeoPermissions
from worker.keys import ApiKey
from worker.optouts import OptOuts
from worker.queueing import CeleryPublisher
from worker.quotas import Charge
from worker.receipts.config import EngineConfig
from worker.receipts.routing import ReceiptRouter
from worker.settings import Settings
from worker.store import Message, Store, key_messages_key, message_key
from worker.store.receipts import ReceiptStore

BATCH_STEP = 2_000  # recipients validated and stored per step of a batch
# The first step is small, so the workers start sending while the rest is still validated.
FIRST_BATCH_STEP = 250
_LISTS = ("messages", "recipients")  # the two shapes of a batch


def batch_steps(count: int) -> list[tuple[int, int]]:
    """The (start, end) ranges a batch of `count` recipients is taken in: a small first step,
    then `BATCH_STEP` at a time."""
    bounds = [0, min(FIRST_BATCH_STEP, count)]
    while bounds[-1] < count:
        bounds.append(min(bounds[-1] + BATCH_STEP, count))
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


_CHUNKS: dict[str, pydantic.TypeAdapter[list[Any]]] = {
    "messages": pydantic.TypeAdapter(list[dict[str, object]]),
    "recipients": pydantic.TypeAdapter(list[str | Recipient]),
}


def accepted_reply(message: Message, summary: Summary) -> dict[str, Any]:
    """The 202 answer of `POST /sms/send`."""
    return {
        "id": message.id,
        "status": str(message.status),
        "to": message.to,
        "encoding": summary.encoding,
        "segments": summary.segments,
        "characters": summary.characters,
    }


@dataclass(frozen=True, slots=True)
class PendingSend:
    """A validated single send, ready to be written (`MessageDesk.commit_sends`)."""

    write: GuardedWrite
    later: list[Job]  # tasks to publish once written (a broker other than the store's Redis)


class MessageDesk:
    """Sends, accepts batches of, cancels, reads and lists messages; one per process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        publisher: CeleryPublisher,
        gate: Gate | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.gate = gate
        self.idempotency = Idempotency(store.redis)
        self.optouts = OptOuts(store.redis)
        # Cancelling opens receipts: they go straight into their endpoints' queues.
        self.receipts = ReceiptRouter(
            ReceiptStore(store.redis), publisher, EngineConfig.from_settings(settings)
        )

    # -- one message ---------------------------------------------------------------------------
    def send(
        self,
        body: SendRequest,
        key_id: str,
        *,
        caller: ApiKey | None = None,
        idempotency: tuple[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """Validate, store and queue (or schedule) one message; its 202 answer.

        With `caller` (the API), the key's revocation, rate, daily quota and the
        Idempotency-Key (`idempotency`: its name and the request body) are checked in the same
        atomic step that writes the message; a repeat returns the first answer."""
        if caller is None or self.gate is None:
            message, summary = build_message(body, self.settings, key_id=key_id)
            self.optouts.check(key_id, message.to)  # 422 `opted_out`: the number said STOP
            accept_messages(self.store, self.publisher, [message])
            return accepted_reply(message, summary)
        outcome = self.commit_sends([self.prepare_send(body, caller, idempotency)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def prepare_send(
        self, body: SendRequest, caller: ApiKey, idempotency: tuple[str, bytes] | None = None
    ) -> PendingSend:
        """The first half of `send` for a key, no I/O: the validated message's guarded write."""
        geo = GeoPermissions.for_key(caller.countries, self.settings)
        message, summary = build_message(body, self.settings, key_id=caller.id, geo=geo)
        reply = accepted_reply(message, summary)
        pipe = self.store.redis.pipeline(transaction=False)
        later = stage_messages(pipe, self.store, self.publisher, [message])
        writes = [args for args, _options in pipe.command_stack]
        pipe.reset()
        # Refused in the write's own round trip if the recipient said STOP (`worker.optouts`).
        refused = OptedOutError(message.to)
        refusals = [Refusal(key, message.to, refused) for key in OptOuts.lists(caller.id)]
        return PendingSend(GuardedWrite(caller, writes, 1, reply, idempotency, refusals), later)

    def commit_sends(self, sends: list[PendingSend]) -> list[dict[str, Any] | Exception]:
        """The second half: every pending send written in one round trip (each admitted on its
        own); for each, its answer or the error that refused it."""
        if self.gate is None:
            raise RuntimeError("guarded sends need a gate")
        outcomes = self.gate.write_many([s.write for s in sends])
        later = [job for s, o in zip(sends, outcomes, strict=True) if o is None for job in s.later]
        if later:
            self.publisher.publish_many(later)
        return [s.write.reply if o is None else o for s, o in zip(sends, outcomes, strict=True)]

    def prepare_request(
        self, raw: bytes, caller: ApiKey, idempotency_key: str | None
    ) -> PendingSend:
        """`prepare_send` of a raw `POST /sms/send` body. Refused input (4xx) still counts
        toward the key's rate (and a key over its rate hears 429 first)."""
        try:
            body = parse_model(SendRequest, parse_json_body(raw, self.settings.max_body_bytes))
            idempotency = None if idempotency_key is None else (idempotency_key, raw)
            if idempotency_key is not None:
                idempotency_key_of(caller.id, idempotency_key)  # 422 for a bad header first
            return self.prepare_send(body, caller, idempotency)
        except ValidationError:
            if self.gate is not None:
                self.gate.admit(caller)
            raise

    # -- many messages -------------------------------------------------------------------------
    def send_many(
        self, bodies: Iterable[Mapping[str, Any]], key_id: str, *, batch_id: str | None = None
    ) -> IngestResult:
        """Send many messages (API body dicts) as one batch, stored and queued in pipelined
        chunks; the result lists the accepted ids and each rejected index with its error."""
        batch = claim_batch(self.store, batch_id, key_id, "bulk")
        result = ingest(
            self.store, self.publisher, self.settings, (dict(b) for b in bodies),
            key_id=key_id, batch_id=batch,
        )  # fmt: skip
        record_batch(self.store, result)
        return result

    def accept_batch(
        self,
        raw: bytes,
        key_id: str,
        *,
        caller: ApiKey | None = None,
        idempotency: str | None = None,
    ) -> BatchIngest:
        """A `POST /sms/batch` body to accept, step by step (`BatchIngest.step`)."""
        return BatchIngest(self, raw, key_id, caller=caller, idempotency=idempotency)

    # -- cancel, read, list --------------------------------------------------------------------
    def cancel(self, message_id: str, key_id: str) -> dict[str, Any]:
        """Cancel the key's queued or scheduled message; 404 for others' or unknown ones, 409
        once it is being submitted or done."""
        fields = self._owned(message_id, key_id)
        if not self.cancel_ids([message_id]):
            raise ConflictError(
                f"the message is {fields.get('status')} and can no longer be cancelled"
            )
        return {"id": message_id, "status": MessageStatus.CANCELLED.value}

    def cancel_ids(self, message_ids: list[str]) -> int:
        """Cancel those of `message_ids` still queued or scheduled: each becomes final
        `cancelled` and sends its receipt (level 1, or level 2 alone: `cancelled` /
        `DELETED`) when it asked for one; returns how many."""
        if not message_ids:
            return 0
        answers = self.store.cancel_many(message_ids)
        opened = [(m, level) for m, level in zip(message_ids, answers, strict=True) if level > 0]
        self.receipts.route(opened)
        return sum(1 for answer in answers if answer >= 0)

    def cancel_batch(self, batch_id: str, key_id: str) -> int:
        """Cancel every message of the key's batch not yet being submitted; how many."""
        return sum(self.cancel_ids(ids) for ids in batch_ids(self.store, batch_id, key_id))

    def cancel_pending(self, key_id: str, page: int = 1000) -> int:
        """Cancel every queued or scheduled message of the key (`smsq keys revoke
        --cancel-pending`), walking its message index a page at a time; returns how many."""
        index = key_messages_key(key_id)
        cancelled, upper = 0, "+"
        while True:
            ids = cast(list[str], self.store.redis.zrevrangebylex(index, upper, "-", 0, page))
            if not ids:
                return cancelled
            pipe = self.store.redis.pipeline(transaction=False)
            for message_id in ids:
                pipe.hget(message_key(message_id), "status")
            pending = [m for m, s in zip(ids, pipe.execute(), strict=True) if s in CANCELLABLE]
            cancelled += self.cancel_ids(pending)
            upper = f"({ids[-1]}"

    def status(self, message_id: str, key_id: str) -> dict[str, Any]:
        """`GET /sms/{id}`: state, segments, receipts and events; 404 for other keys."""
        return message_view(self.store, self._owned(message_id, key_id))

    def list(self, key_id: str, filters: Filters) -> dict[str, Any]:
        """`GET /sms`: the key's messages, newest first, a page at a time."""
        return list_messages(self.store, key_id, filters)

    def _owned(self, message_id: str, key_id: str) -> dict[str, str]:
        fields = self.store.fields(message_id) if message_id.isalnum() else {}
        if not fields or fields.get("key_id") != key_id:
            raise NotFoundError("no such message")
        return fields


def parse_batch(data: Any) -> tuple[BatchRequest, str, list[Any]]:
    """The batch's own fields (validated, its list left empty), the list's name and items."""
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", code="invalid")
    name = next((n for n in _LISTS if isinstance(data.get(n), list)), "")
    items: list[Any] = data[name] if name else []
    request = parse_model(BatchRequest, {**data, name: []} if name else data)
    if len(items) > MAX_BATCH:
        raise ValidationError(
            f"{name}: at most {MAX_BATCH:,} per request (send more in chunks with the same "
            "batch_id)",
            field=name,
            code="too_long",
        )
    return request, name, items


def validated_items(name: str, items: list[Any], offset: int) -> list[Any]:
    """The list items, each validated; an invalid one becomes the ValidationError naming it
    (that recipient is rejected, the batch goes on). The whole chunk is checked in one call
    first (pydantic's own loop); only a chunk with an invalid item is looked at item by item."""
    try:
        return list(_CHUNKS[name].validate_python(items))
    except pydantic.ValidationError:
        pass
    checked: list[Any] = []
    for index, item in enumerate(items, start=offset):
        if name == "recipients" and isinstance(item, str):
            checked.append(item)
        elif not isinstance(item, dict):
            shape = "a number or an object" if name == "recipients" else "an object"
            where = f"{name}.{index}"
            checked.append(ValidationError(f"{where}: must be {shape}", field=where))
        elif name == "messages":
            checked.append(item)  # validated as a send body when expanded
        else:
            try:
                checked.append(Recipient.model_validate(item))
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in (name, index, *first["loc"]))
                checked.append(ValidationError(f"{where}: {first['msg']}", field=where))
    return checked


class _Collector:
    """The cyclic garbage collector's part in accepting batches (one per process).

    A parsed 100,000-recipient body is some 400,000 objects, and each full sweep of the
    collector walks every tracked object holding the interpreter lock: measured 70–130 ms, ten
    times during such a batch, and every request of the process waited. So the collector is
    paused while a body is parsed, the parsed objects are then frozen (kept out of its sweeps,
    `gc.freeze`) until the last batch being accepted is done; reference counting still frees
    them as usual."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parsing = 0
        self._accepting = 0

    @contextmanager
    def batch(self) -> Iterator[Callable[[], None]]:
        """For one batch: the collector paused until the returned `parsed()` is called."""
        parsed = False

        def done_parsing() -> None:
            nonlocal parsed
            with self._lock:
                gc.freeze()
                parsed = True
                self._parsing -= 1
                if not self._parsing:
                    gc.enable()

        with self._lock:
            self._parsing += 1
            self._accepting += 1
            gc.disable()
        try:
            yield done_parsing
        finally:
            if not parsed:
                done_parsing()
            with self._lock:
                self._accepting -= 1
                if not self._accepting:
                    gc.unfreeze()


collector = _Collector()


class BatchIngest:
    """One batch being accepted, a bounded step at a time: `step()` returns None until the
    last step, which returns the 202 answer. Parsing the body is one step, then each step
    validates and stores `BATCH_STEP` recipients (a generator, `_run`, holds the place).
    `result` holds the ids and rejections."""

    def __init__(
        self,
        desk: MessageDesk,
        raw: bytes,
        key_id: str,
        *,
        caller: ApiKey | None,
        idempotency: str | None,
    ) -> None:
        self.desk, self.raw, self.key_id = desk, raw, key_id
        self.caller, self.idempotency = caller, idempotency
        self.result: IngestResult | None = None
        self._steps = self._run()
        self._reply: dict[str, Any] | None = None

    def step(self) -> dict[str, Any] | None:
        """Do the next step: None while steps remain, then the answer (again on every call)."""
        if self._reply is None:
            try:
                next(self._steps)
            except StopIteration as done:
                self._reply = done.value
        return self._reply

    def run(self) -> dict[str, Any]:
        """Every step at once (the library, tests)."""
        while (reply := self.step()) is None:
            pass
        return reply

    def _run(self) -> Generator[None, None, dict[str, Any]]:
        with collector.batch() as parsed:
            body = parse_json_body(self.raw, self.desk.settings.max_batch_body_bytes)
            request, name, items = parse_batch(body)
            parsed()
            yield None
            return (yield from self._accept(request, name, items))

    def _accept(
        self, request: BatchRequest, name: str, items: list[Any]
    ) -> Generator[None, None, dict[str, Any]]:
        settings = self.desk.settings
        if self.idempotency is not None:
            first = self.desk.idempotency.begin(self.key_id, self.idempotency, self.raw)
            if first is not None:
                return first
        charge: Charge | None = None
        try:
            quiet, callback_url = self._check(request)
            if self.caller is not None and self.desk.gate is not None and self.caller.daily:
                charge = self.desk.gate.admit(self.caller, len(items), call=False)
            batch_id = claim_batch(
                self.desk.store, request.batch_id, self.key_id, request.priority, callback_url
            )
        except BaseException:
            self._abandon(charge)
            raise
        result = self.result = IngestResult(batch_id)
        countries = self.caller.countries if self.caller is not None else ()
        geo = GeoPermissions.for_key(countries, settings)
        try:
            for start, end in batch_steps(len(items)):
                yield None
                chunk = validated_items(name, items[start:end], start)
                ingest(
                    self.desk.store, self.desk.publisher, settings, expand(request, chunk),
                    key_id=self.key_id, batch_id=batch_id, quiet=quiet, geo=geo, result=result,
                )  # fmt: skip
        except BaseException:
            self._abandon(None)  # the client may try again (what was stored stays stored)
            raise
        finally:
            record_batch(self.desk.store, result)  # what was stored counts, whatever failed
        reply = {
            "id": result.batch_id,
            "accepted": len(result.accepted),
            "rejected": result.rejected,
            "status": "scheduled" if request.send_at else "queued",
            "held_for_quiet_hours": result.held,
        }
        if self.idempotency is not None:
            self.desk.idempotency.finish(self.key_id, self.idempotency, self.raw, reply)
        return reply

    def _check(self, request: BatchRequest) -> tuple[QuietHours | None, str | None]:
        """The batch-wide checks: quiet hours, and one bad URL is one 422, not N rejections."""
        settings = self.desk.settings
        quiet = (
            QuietHours.parse(request.quiet_hours.start, request.quiet_hours.end)
            if request.quiet_hours
            else None
        )
        if request.dlr_url:
            check_receipt_url(request.dlr_url, settings)
        callback_url = (
            check_receipt_url(request.batch_callback_url, settings, "batch_callback_url")
            if request.batch_callback_url
            else None
        )
        return quiet, callback_url

    def _abandon(self, charge: Charge | None) -> None:
        """A batch refused before anything was stored: free its Idempotency-Key, refund."""
        if self.idempotency is not None:
            self.desk.idempotency.abandon(self.key_id, self.idempotency)
        if charge is not None and self.desk.gate is not None:
            self.desk.gate.refund(charge)
