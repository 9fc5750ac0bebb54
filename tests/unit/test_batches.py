"""Batch expansion and ingest: templates, per-recipient validation, pipelined storage."""

from __future__ import annotations

import fakeredis
import pytest
from celery import Celery

from producer.batches import claim_batch, expand, ingest, record_batch, render
from producer.schemas import BatchRequest
from worker.errors import NotFoundError, ValidationError
from worker.queueing import CeleryPublisher
from worker.settings import Settings
from worker.store import Store


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
