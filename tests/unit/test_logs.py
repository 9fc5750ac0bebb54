"""Structured logs: JSON lines, masked numbers, no text or codes, task context bound."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from celery import Celery
from prometheus_client import REGISTRY

from worker import logs
from worker.logs import SmsqHandler, mask_number, mask_numbers, redact
from worker.signals import task_context

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Lines]:
    """Logs configured as in a worker; yields a reader of the JSON lines written since."""
    root = logging.getLogger()
    level = root.level
    logs.configure("DEBUG", json=True)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]

    yield lines
    for handler in [h for h in root.handlers if isinstance(h, SmsqHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


class TestMasking:
    @pytest.mark.parametrize(
        ("number", "masked"),
        [
            ("+14155552671", "+1********71"),
            ("+447911123456", "+44********56"),
            ("+4915112345678", "+49*********78"),
            ("+33612345678", "+33*******78"),
            ("+8613800138000", "+86*********00"),
            ("+35312345678", "+353******78"),
        ],
    )
    def test_keeps_country_code_and_last_two_digits(self, number: str, masked: str) -> None:
        """The country code and the last two digits stay; the rest become stars."""
        assert mask_number(number) == masked

    def test_masks_numbers_inside_text(self) -> None:
        """Every E.164 number in a sentence is masked; other digits stay."""
        text = "to +14155552671 and +447911123456, 3 segments, id 0123456789abcdef"
        assert mask_numbers(text) == (
            "to +1********71 and +44********56, 3 segments, id 0123456789abcdef"
        )

    def test_masks_url_encoded_numbers_and_drops_query_text(self) -> None:
        """A logged URL keeps no full number (`%2B…`) and no message text (`text=`)."""
        url = "GET http://kannel/cgi-bin/sendsms?to=%2B14155552671&text=Your+code+is+123456&x=1"
        assert mask_numbers(url) == (
            "GET http://kannel/cgi-bin/sendsms?to=+1********71&text=[redacted]&x=1"
        )


class TestRedact:
    def test_drops_text_and_codes_at_any_depth(self) -> None:
        """`content`, `text`, `code` and `body` never survive, nested or not."""
        event = {
            "event": "x",
            "content": "Your code is 123456",
            "code": "123456",
            "detail": {"body": "{...}", "text": "hi", "kept": 1},
        }
        assert redact(None, "info", event) == {"event": "x", "detail": {"kept": 1}}

    def test_masks_number_fields_with_or_without_plus(self) -> None:
        """Fields that hold a number are masked even without the `+`; ids are untouched."""
        event = {"event": "sent", "to": "14155552671", "message_id": "0199aa11223344556677889900"}
        assert redact(None, "info", event) == {
            "event": "sent",
            "to": "+1********71",
            "message_id": "0199aa11223344556677889900",
        }


class TestConfigure:
    def test_stdlib_extra_fields_become_json_fields(self, json_logs: Lines) -> None:
        """A stdlib `log.warning(..., extra=...)` is one JSON line with its fields, masked."""
        logging.getLogger("worker.sending").warning(
            "carrier refused %s", "+14155552671", extra={"message_id": "m1", "content": "hi"}
        )
        (line,) = json_logs()
        assert line["event"] == "carrier refused +1********71"
        assert (line["message_id"], line["level"], line["logger"]) == (
            "m1",
            "warning",
            "worker.sending",
        )
        assert "content" not in line
        assert line["timestamp"].endswith("Z")

    def test_bound_context_reaches_stdlib_lines(self, json_logs: Lines) -> None:
        """What a task bound (message_id) is on every line it logs, from any module."""
        structlog.contextvars.bind_contextvars(message_id="m2", task="sms.send")
        logging.getLogger("worker.receipts").info("receipt sent")
        logs.get_logger("other").info("step", attempt=2)
        first, second = json_logs()
        assert first["message_id"] == second["message_id"] == "m2"
        assert second["attempt"] == 2

    def test_exceptions_carry_no_local_variables(self, json_logs: Lines) -> None:
        """A logged exception is a plain traceback: locals (the text, the code) are not in it."""
        secret_text = "Your code is 987654"  # a local variable of the failing frame
        try:
            raise ValueError("boom for " + secret_text[:4])
        except ValueError:
            logging.getLogger("t").exception("failed")
        (line,) = json_logs()
        assert "ValueError: boom for Your" in line["exception"]
        assert "987654" not in json.dumps(line)

    def test_http_clients_log_no_request_lines(self, json_logs: Lines) -> None:
        """httpx's per-request INFO lines (full URLs) are not written."""
        logging.getLogger("httpx").info("HTTP Request: GET http://x/?to=%2B14155552671")
        assert json_logs() == []

    def test_configuring_twice_keeps_one_handler(self, json_logs: Lines) -> None:
        """Configure is idempotent: one smsq handler on the root logger."""
        logs.configure("INFO", json=True)
        assert sum(isinstance(h, SmsqHandler) for h in logging.getLogger().handlers) == 1


class TestTaskSignals:
    def test_task_context_is_ids_only(self) -> None:
        """sms.send binds its message id, a receipt its level, carrier receipts the carrier."""
        assert task_context("sms.send", ("m1",)) == {"task": "sms.send", "message_id": "m1"}
        assert task_context("sms.dlr.post", ("m1", 2)) == {
            "task": "sms.dlr.post", "message_id": "m1", "receipt_level": 2,
        }  # fmt: skip
        assert task_context("sms.carrier_dlr", ("sim", {"body": "..."})) == {
            "task": "sms.carrier_dlr", "carrier": "sim",
        }  # fmt: skip

    def test_a_task_logs_one_done_line_with_its_message_id(self, json_logs: Lines) -> None:
        """Run through Celery's signals, a receipt task logs with its message id bound, ends
        with one `task done` line, counts the task, and leaves no context behind."""
        app = Celery("signals-test", broker="memory://")
        app.conf.task_always_eager = True  # runs in this thread: signals as in a worker thread

        @app.task(name="sms.dlr.post")
        def post(message_id: str, level: int) -> str:
            logging.getLogger("worker.receipts").info("delivering")
            return "sent"

        counted = {"task": "sms.dlr.post", "state": "SUCCESS"}
        before = REGISTRY.get_sample_value("smsq_tasks_total", counted) or 0
        post.apply(args=("m9", 1))
        lines = json_logs()
        working, done = (line for line in lines if line["logger"].startswith("worker."))
        celery_lines = [line for line in lines if line["logger"] == "celery.app.trace"]
        assert [line["message_id"] for line in celery_lines] == ["m9"]  # Celery's line too
        assert (working["event"], working["message_id"], working["receipt_level"]) == (
            "delivering", "m9", 1,
        )  # fmt: skip
        assert (done["event"], done["result"], done["message_id"]) == ("task done", "sent", "m9")
        assert REGISTRY.get_sample_value("smsq_tasks_total", counted) == before + 1
        assert structlog.contextvars.get_contextvars() == {}
