"""The Redis key layout has one owner: every `smsq:` key is built in `worker/store/keys.py`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from worker.store import keys

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("worker", "producer", "bench")
KEYS_MODULE = ROOT / "worker" / "store" / "keys.py"
# A string literal that starts a key (`"smsq:msg:…"`, `f"smsq:{…}"`); `"smsq: error"` is prose.
KEY_LITERAL = re.compile(r"""["']smsq:(?!\s)""")


def _source_files() -> list[Path]:
    return sorted(
        path
        for top in SOURCES
        for pattern in ("*.py", "*.lua")
        for path in (ROOT / top).rglob(pattern)
        if path != KEYS_MODULE
    )


def test_no_key_string_outside_the_keys_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _source_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if KEY_LITERAL.search(line)
    ]
    assert found == [], "build these keys in worker/store/keys.py:\n" + "\n".join(found)


def test_receipt_fields_are_named_by_the_receipt_store() -> None:
    """`rcpt:{level}:*` fields are spelled in `worker/store/receipts.py` (and in Lua) only."""
    owners = {KEYS_MODULE, ROOT / "worker" / "store" / "receipts.py"}
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _source_files()
        if path.suffix == ".py" and path not in owners
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "rcpt:" in line
    ]
    advice = "use worker.store.receipts.receipt_field or ReceiptRecord:\n"
    assert found == [], advice + "\n".join(found)


def test_the_check_sees_a_key_string() -> None:
    assert KEY_LITERAL.search('client.get(f"smsq:msg:{message_id}")')
    assert KEY_LITERAL.search("PREFIX = 'smsq:'")
    assert not KEY_LITERAL.search('typer.echo(f"smsq: {message}")')


def test_no_module_defines_a_key_builder_again() -> None:
    builders = {
        name for name in vars(keys) if name.endswith(("_key", "_KEY", "_PATTERN", "PREFIX"))
    }
    again = []
    for path in _source_files():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            else:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            again += [f"{where}: {name}" for name in names if name in builders]
    assert again == [], "defined in worker/store/keys.py already:\n" + "\n".join(again)


def test_every_key_is_under_the_prefix() -> None:
    built = [
        keys.message_key("m"),
        keys.batch_key("b"),
        keys.batch_ids_key("b"),
        keys.breaker_key("c"),
        keys.carrier_tries_key("m:1"),
        keys.smpp_stream_key("c", "otp"),
        keys.api_key_key("k"),
        keys.api_key_daily_key("k", 1),
        keys.idempotency_record_key("k", "d"),
        keys.otp_challenge_key("c"),
        keys.otp_limit_key("to", "+1", shared=True),
        keys.SCHEDULE_KEY,
        keys.BATCH_WATCH_KEY,
        keys.NO_IDEMPOTENCY_KEY,
    ]
    assert all(key.startswith(keys.PREFIX) for key in built)
    assert keys.carrier_of_breaker_key(keys.breaker_key("kannel-eu")) == "kannel-eu"
