"""The Lua scripts and Python agree: the prelude's names are the contract's, every `.lua` file
says what it takes and guarantees, and every state a script compares against is a contract one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import pytest
import redis

from worker.contract import (
    CANCELLABLE_STATUSES,
    FINAL_STATUSES,
    RECEIPT_DONE,
    RECEIPT_OK_STATUSES,
    SEGMENTS_FAILED,
    SEGMENTS_TAKEN,
    MessageStatus,
    ReceiptLevel,
    ReceiptState,
    SegmentStatus,
)
from worker.otp.challenges import Verification
from worker.store import lua_scripts

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(lua_scripts.LUA_DIR.glob("*.lua"))
# Files of functions other scripts include; their header is the function's signature.
LIBRARIES = {path.stem for path in SCRIPTS if path.stem.endswith("_lib")} | {"snapshot"}


def _names(values: Iterable[object]) -> set[str]:
    return {str(value) for value in values}


EXPECTED = {
    "FINAL": _names(FINAL_STATUSES),
    "CANCELLABLE": _names(CANCELLABLE_STATUSES),
    "SEGMENT_TAKEN": _names(SEGMENTS_TAKEN),
    "SEGMENT_FAILED": _names(SEGMENTS_FAILED),
    "RECEIPT_DONE": _names(RECEIPT_DONE),
    "RECEIPT_OK": _names(RECEIPT_OK_STATUSES),
    "WANTS_SMSC": _names(level for level in (1, 2, 3) if ReceiptLevel.wants_smsc(level)),
    "WANTS_TERMINAL": _names(level for level in (1, 2, 3) if ReceiptLevel.wants_terminal(level)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_prelude_holds_the_contracts_names(redis_client: redis.Redis, name: str) -> None:
    """Run on a real Redis: the members of each prelude set, as Lua sees them."""
    read = f"local out = {{}} for k in pairs({name}) do out[#out + 1] = k end return out"
    members = cast(list[str], redis_client.eval(lua_scripts.prelude() + read, 0))
    assert set(members) == EXPECTED[name]


def test_receipt_levels_are_stored_as_digits() -> None:
    """`dlr_level` is kept as '1', '2' or '3' in the message hash, as the Lua sets name them."""
    assert EXPECTED["WANTS_SMSC"] == {"1", "3"}
    assert EXPECTED["WANTS_TERMINAL"] == {"2", "3"}


def test_every_script_is_loaded_by_name() -> None:
    names = [path.stem for path in SCRIPTS]
    code = "\n".join(
        path.read_text()
        for top in ("worker", "producer")
        for path in (ROOT / top).rglob("*.py")
    )
    unused = [name for name in names if f'"{name}"' not in code]
    assert unused == []


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.stem not in LIBRARIES], ids=str)
def test_every_script_says_its_keys_and_arguments(path: Path) -> None:
    header = "\n".join(
        line for line in path.read_text().splitlines() if line.startswith("--")
    )
    assert path.read_text().startswith("-- ")
    assert "KEYS" in header
    assert "ARGV" in header


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.stem in LIBRARIES], ids=str)
def test_every_library_starts_with_its_signature(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert re.match(r"-- \w+\(.*\)", first), first


# A state word a script compares against or writes as a status: `== 'sent'`,
# `'HSET', KEYS[1], 'status', 'cancelled'`.
STATE_WORD = re.compile(
    r"""(?:==|~=)\s*'([a-z_]+)'|'HSET'[^)\n]*?'(?:status|state)',\s*'([a-z_]+)'"""
)
STATES = (
    {str(s) for s in MessageStatus}
    | {str(s) for s in SegmentStatus}
    | {str(s) for s in ReceiptState}
    | {str(s) for s in Verification}
)
OTHER_WORDS = {"retry"}  # a drain's verdict on an attempt (`worker.store.receipts`, `mo`)


def test_every_state_word_in_lua_is_a_contract_state() -> None:
    unknown = [
        f"{path.name}: {word}"
        for path in SCRIPTS
        for match in STATE_WORD.finditer(path.read_text())
        for word in match.groups()
        if word and word not in STATES | OTHER_WORDS
    ]
    assert unknown == []


def test_the_check_sees_state_words() -> None:
    lua = "if s == 'sent' then redis.call('HSET', k, 'status', 'x') end"
    assert [m.groups() for m in STATE_WORD.finditer(lua)] == [("sent", None), (None, "x")]
    assert not STATE_WORD.search("redis.call('HMGET', k, 'status', 'segments')")
