"""Batch expansion and ingest: templates, per-recipient validation, pipelined storage."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import fakeredis
import orjson
import pytest
from celery import Celery

from producer.batches import claim_batch, expand, ingest, record_batch, render
from producer.desk import BATCH_STEP, FIRST_BATCH_STEP, batch_steps
from producer.schemas import BatchRequest
from producer.submission import accept_messages, send_jobs
from worker.contract import SEND_MANY, SEND_SMS, Priority
from worker.errors import NotFoundError, ValidationError
from worker.queueing import SCHEDULE_KEY, CeleryPublisher
from worker.settings import Settings
from worker.store import Message, Store, new_message_id


class TestRender:
    def test_variables_are_substituted(self) -> None:
        """Every {name} takes the recipient's value."""
        assert render("Hi {name}, {n} left", {"name": "Ann", "n": 3}) == "Hi Ann, 3 left"

    def test_missing_variable_names_it(self) -> None:
        """A template variable the recipient lacks is an error naming it."""
        with pytest.raises(ValidationError) as caught:
            render("Hi {name}", {})
        assert caught.value.field == "vars.name"

    def test_only_plain_names_are_variables(self) -> None:
        """Format-string tricks are left as text, never evaluated."""
        assert render("{x.__class__} {0}", {"x": 1}) == "{x.__class__} {0}"


class TestExpand:
    def test_template_and_common_options_make_one_body_per_recipient(self) -> None:
        """Each recipient gets the rendered template and the batch's options (priority bulk)."""
        named = {"to": "+447911123456", "vars": {"name": "B"}}
        request = BatchRequest.model_validate(
            {"content": "Hi {name}", "recipients": ["+14155552671", named],
             "dlr": True, "dlr-url": "https://example.com/r"}
        )  # fmt: skip
        first, second = list(expand(request))
        assert isinstance(first, ValidationError)  # a bare number has no {name}
        assert isinstance(second, dict)
        assert (second["content"], second["priority"], second["dlr-url"]) == (
            "Hi B", "bulk", "https://example.com/r",
        )  # fmt: skip

    def test_exactly_one_shape_is_allowed(self) -> None:
        """A batch has messages, or a template with recipients, not both or neither."""
        for body in (
            {},
            {"messages": [], "recipients": [], "content": "x"},
            {"recipients": ["+1"]},
        ):
            with pytest.raises(ValueError, match=r"messages|content"):
                BatchRequest.model_validate(body)


class TestIngest:
    def test_valid_recipients_are_stored_and_invalid_ones_listed(self) -> None:
        """Ingest stores the valid messages under the batch and lists each rejection by index."""
        client = fakeredis.FakeRedis(decode_responses=True)
        store = Store(client)
        publisher = CeleryPublisher(Celery("t", broker="memory://"), client)
        request = BatchRequest.model_validate(
            {"messages": [{"to": "+14155552671", "content": "a"}, {"to": "nope", "content": "b"},
                          {"to": "+447911123456", "content": ""}]}
        )  # fmt: skip
        batch_id = claim_batch(store, None, "k1", "bulk")
        result = ingest(
            store, publisher, Settings(), expand(request), key_id="k1", batch_id=batch_id
        )
        record_batch(store, result)
        assert len(result.accepted) == 1
        assert [(r["index"], r["error"]["field"]) for r in result.rejected] == [
            (1, "to"),
            (2, "content"),
        ]
        assert client.lrange(f"smsq:batch:{batch_id}:ids", 0, -1) == result.accepted
        assert client.hget(f"smsq:msg:{result.accepted[0]}", "batch_id") == batch_id
        assert client.hmget(f"smsq:batch:{batch_id}", "accepted", "rejected") == ["1", "2"]

    def test_another_keys_batch_cannot_be_appended_to(self) -> None:
        """Appending to a batch id owned by another key is refused as not found."""
        store = Store(fakeredis.FakeRedis(decode_responses=True))
        batch_id = claim_batch(store, None, "k1", "bulk")
        with pytest.raises(NotFoundError):
            claim_batch(store, batch_id, "k2", "bulk")


def queued_tasks(client: fakeredis.FakeRedis, queue: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of each task message waiting in `queue` (kombu envelopes)."""
    tasks = []
    for raw in client.lrange(queue, 0, -1):
        envelope = orjson.loads(raw)
        args, _, _ = orjson.loads(base64.b64decode(envelope["body"]))
        tasks.append((envelope["headers"]["task"], args))
    return tasks


class TestSendChunks:
    def ingest_recipients(
        self, count: int, settings: Settings, **options: Any
    ) -> tuple[fakeredis.FakeRedis, list[str]]:
        client = fakeredis.FakeRedis(decode_responses=True)
        store = Store(client)
        publisher = CeleryPublisher(Celery("t", broker="memory://"), client, direct=True)
        numbers = [f"+1415555{n:04d}" for n in range(count)]
        request = BatchRequest.model_validate({"content": "hi", "recipients": numbers, **options})
        batch_id = claim_batch(store, None, "k1", "bulk")
        result = ingest(store, publisher, settings, expand(request), key_id="k1", batch_id=batch_id)
        assert len(result.accepted) == count
        return client, result.accepted

    def test_a_batch_is_queued_in_chunks_of_its_lane(self) -> None:
        """200 recipients: at most ceil(200/16) send tasks, each id in exactly one of them."""
        client, accepted = self.ingest_recipients(200, Settings())
        tasks = queued_tasks(client, "bulk")
        assert len(tasks) <= math.ceil(200 / 16)
        assert {name for name, _ in tasks} == {SEND_MANY}
        ids = [i for _, (chunk,) in tasks for i in chunk]
        assert sorted(ids) == sorted(accepted)
        assert max(len(chunk) for _, (chunk,) in tasks) == 16

    def test_a_chunk_of_one_is_a_plain_send(self) -> None:
        """SMSQ_SEND_CHUNK=1 (or a lone message) keeps one `sms.send` per id."""
        client, accepted = self.ingest_recipients(3, Settings(send_chunk=1))
        assert sorted(queued_tasks(client, "bulk")) == sorted((SEND_SMS, [i]) for i in accepted)

    def test_a_scheduled_batch_is_scheduled_in_chunks(self) -> None:
        """A batch sent later: its due jobs are chunked the same way, nothing queued yet."""
        send_at = datetime.now(UTC) + timedelta(hours=1)
        client, accepted = self.ingest_recipients(40, Settings(), send_at=send_at.isoformat())
        assert queued_tasks(client, "bulk") == []
        members = cast(list[str], client.zrange(SCHEDULE_KEY, 0, -1))
        jobs = [orjson.loads(m.partition("|")[2]) for m in members]
        assert sorted((j["task"], len(j["args"][0]), j["queue"]) for j in jobs) == [
            (SEND_MANY, 8, "bulk"), (SEND_MANY, 16, "bulk"), (SEND_MANY, 16, "bulk"),
        ]  # fmt: skip
        assert sorted(i for j in jobs for i in j["args"][0]) == sorted(accepted)


def test_a_single_send_stays_one_task() -> None:
    """Single sends (and OTPs) keep one id per `sms.send`, for latency."""
    client = fakeredis.FakeRedis(decode_responses=True)
    store = Store(client)
    publisher = CeleryPublisher(Celery("t", broker="memory://"), client, direct=True)
    message = Message(id=new_message_id(), to="+14155552671", sender="smsq", content="x")
    accept_messages(store, publisher, [message])
    assert queued_tasks(client, "normal") == [(SEND_SMS, [message.id])]


def test_chunks_keep_to_one_lane_and_never_hold_an_otp() -> None:
    """Ids are chunked per lane; the OTP lane keeps one id per task whatever the chunk."""
    lanes = ["bulk", "otp", "normal"] * 5
    messages = [
        Message(id=f"m{i}", to="+14155552671", sender="smsq", content="x", priority=Priority(lane))
        for i, lane in enumerate(lanes)
    ]
    jobs = [job for _, job in send_jobs(messages, chunk=4)]
    by_queue = sorted((queue, task, len(args[0]) if task == SEND_MANY else 1)
                      for task, args, queue in jobs)  # fmt: skip
    assert by_queue == [
        ("bulk", SEND_SMS, 1), ("bulk", SEND_MANY, 4),
        ("normal", SEND_SMS, 1), ("normal", SEND_MANY, 4),
        *[("otp", SEND_SMS, 1)] * 5,
    ]  # fmt: skip
    for task, args, queue in jobs:
        ids = args[0] if task == SEND_MANY else args
        assert {lanes[int(i[1:])] for i in ids} == {queue}


class TestBatchSteps:
    @pytest.mark.parametrize(
        "count", [0, 1, FIRST_BATCH_STEP, FIRST_BATCH_STEP + 1, 4_500, 100_000]
    )
    def test_every_recipient_is_taken_once_in_order_the_first_step_small(self, count: int) -> None:
        """A batch is validated and stored in steps: a small first one (the workers start on
        it while the rest is validated), then `BATCH_STEP` at a time; together they cover every
        recipient exactly once, in order."""
        steps = batch_steps(count)
        covered = [i for start, end in steps for i in range(start, end)]
        assert covered == list(range(count))
        if steps:
            assert steps[0][1] - steps[0][0] <= FIRST_BATCH_STEP
            assert all(end - start <= BATCH_STEP for start, end in steps)
