"""Structured logs: one JSON object per line (a console layout on a terminal), nothing secret.

`configure` routes every stdlib `logging` record (ours with `extra={...}`, Celery's, uvicorn's)
and every structlog event through one formatter. Each line carries what the context bound
(`message_id`, `task`… bound per task by `worker.signals`) and passes `redact`:

- keys named like message text or secrets (`content`, `text`, `code`, `body`…) are dropped,
  at any depth;
- phone numbers are masked to their country code and last two digits (`+1********71`):
  every `+` followed by 7-15 digits anywhere, and any digits in fields that hold numbers
  (`to`, `from`, `number`…).

    {"timestamp": "2026-11-25T21:56:59.123800Z", "level": "info", "logger": "worker.signals",
     "event": "task done", "state": "SUCCESS", "result": "accepted", "ms": 12.4,
     "task": "sms.send", "message_id": "01a214b6…", "task_id": "2f5695f4-…"}
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import phonenumbers
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Fields never written: message text, OTP codes, request bodies, credentials, and task
# arguments (Celery's `data`: an inbound carrier receipt travels whole in them).
DROPPED_KEYS = frozenset(
    {"content", "text", "full_text", "code", "body", "otp", "password", "secret", "api_key",
     "authorization", "args", "kwargs", "argsrepr", "kwargsrepr"}
)  # fmt: skip
# Fields that hold a phone number, with or without the `+`.
NUMBER_KEYS = frozenset({"to", "from", "number", "phone", "msisdn", "recipient", "destination"})
# `+` or its URL encoding (receipt and carrier URLs carry numbers in query strings).
_E164 = re.compile(r"(?:\+|%2[Bb])[0-9]{7,15}(?![0-9])")
_DIGITS = re.compile(r"\+?[0-9]{5,15}")
# Text in a URL's query string (Kannel's `sendsms?…&text=…`): the value goes.
_QUERY_TEXT = re.compile(r"([?&;](?:text|content|body|code|full_text)=)[^&\s\"']*", re.IGNORECASE)
# HTTP clients log every request URL at INFO, query string (numbers, Kannel's text) included.
QUIET_LOGGERS = ("httpx", "httpcore", "httpx2")


def mask_number(number: str) -> str:
    """`+14155552671` → `+1********71`: the country code and the last two digits."""
    digits = number.removeprefix("%2B").removeprefix("%2b").lstrip("+")
    country = next(
        (
            digits[:size]
            for size in (1, 2, 3)
            if int(digits[:size] or 0) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
        ),
        "",
    )
    hidden = max(0, len(digits) - len(country) - 2)
    return "+" + country + "*" * hidden + digits[len(country) + hidden :]


def mask_numbers(text: str) -> str:
    """`text` with every E.164 number in it masked, and any text in a query string dropped."""
    text = _QUERY_TEXT.sub(r"\1[redacted]", text)
    return _E164.sub(lambda m: mask_number(m.group(0)), text)


def _clean(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if key in NUMBER_KEYS:
            return _DIGITS.sub(lambda m: mask_number(m.group(0)), value)
        return mask_numbers(value)
    if isinstance(value, Mapping):
        return {k: _clean(str(k), v) for k, v in value.items() if str(k) not in DROPPED_KEYS}
    if isinstance(value, list | tuple):
        return [_clean(key, v) for v in value]
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: drop secret fields, mask phone numbers (see the module doc)."""
    for key in [k for k in event_dict if k in DROPPED_KEYS]:
        del event_dict[key]
    for key, value in event_dict.items():
        if not key.startswith("_"):  # `_record`, `_from_structlog`: the formatter's own
            event_dict[key] = _clean(key, value)
    return event_dict


# Attributes every LogRecord has, or gets from a formatter: not "extra" fields.
_RECORD_ATTRIBUTES = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime",
     "color_message", "taskName"}
)  # fmt: skip


def add_extra(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """A stdlib record's `extra={...}` fields as event fields (`message_id=…`)."""
    record: logging.LogRecord | None = event_dict.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                event_dict.setdefault(key, value)
    return event_dict


_FIRST = ("timestamp", "level", "logger", "event")


def _json(event: MutableMapping[str, Any], **_: Any) -> str:
    """One line, the fixed fields first (what a reader scans for), then the context."""
    ordered = {k: event[k] for k in _FIRST if k in event}
    ordered.update((k, v) for k, v in event.items() if k not in ordered)
    return orjson.dumps(ordered, default=str).decode()


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class SmsqHandler(_Stderr):
    """The handler `configure` installs on the root logger (one, however often called)."""


SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def formatter(json: bool) -> structlog.stdlib.ProcessorFormatter:
    """The formatter every record goes through: JSON, or a console layout."""
    renderer: Processor = _json_renderer() if json else structlog.dev.ConsoleRenderer()
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*SHARED, add_extra],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # a plain traceback: never local variables
            redact,
            renderer,
        ],
    )


def _json_renderer() -> Processor:
    return structlog.processors.JSONRenderer(serializer=_json)


def configure(
    level: str | int = "INFO", *, json: bool | None = None, capture: Iterable[str] = ()
) -> None:
    """Send every log record through `redact` to stderr as JSON (console layout on a TTY).

    `capture` names loggers that have handlers of their own (uvicorn's) to route here too.
    Safe to call again: the previous smsq handler is replaced, other handlers are kept.
    """
    as_json = (not sys.stderr.isatty()) if json is None else json
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, SmsqHandler)]:
        root.removeHandler(handler)
    handler = SmsqHandler()
    handler.setFormatter(formatter(as_json))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python warnings become log lines (JSON) too
    for name in capture:
        captured = logging.getLogger(name)
        captured.handlers.clear()
        captured.propagate = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
