"""Lua scripts kept in `worker/store/lua/*.lua`, each run with a prelude rendered from the
contract's enums, so that state names are written once (in Python) and never copied by hand.

A script is its `.lua` file, after the prelude and the library files it names (functions such
as `receipt_snapshot`); each file's header says its KEYS, ARGV and what it guarantees.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

from worker.contract import (
    CANCELLABLE_STATUSES,
    FINAL_STATUSES,
    RECEIPT_DONE,
    RECEIPT_OK_STATUSES,
    SEGMENTS_FAILED,
    SEGMENTS_TAKEN,
)

LUA_DIR = Path(__file__).with_name("lua")


def lua_set(name: str, members: Iterable[str]) -> str:
    """`local NAME = {a = true, ...}`: a set of names as a Lua table."""
    entries = ", ".join(f"[{_quote(member)}] = true" for member in sorted(members))
    return f"local {name} = {{{entries}}}\n"


def _quote(text: str) -> str:
    if not text.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"not a plain name: {text!r}")
    return f"'{text}'"


@cache
def prelude() -> str:
    """The shared names every script may use, from `worker.contract`."""
    return "".join(
        [
            lua_set("FINAL", FINAL_STATUSES),
            lua_set("CANCELLABLE", CANCELLABLE_STATUSES),
            lua_set("SEGMENT_TAKEN", SEGMENTS_TAKEN),
            lua_set("SEGMENT_FAILED", SEGMENTS_FAILED),
            lua_set("RECEIPT_DONE", RECEIPT_DONE),
            lua_set("RECEIPT_OK", RECEIPT_OK_STATUSES),
        ]
    )


@cache
def read(name: str) -> str:
    """The text of `lua/{name}.lua`."""
    return (LUA_DIR / f"{name}.lua").read_text()


def source(name: str, *libraries: str) -> str:
    """A runnable script: the prelude, the named library files, then `name`'s body."""
    return prelude() + "".join(read(library) for library in libraries) + read(name)


def register(client: redis.Redis, name: str, *libraries: str) -> Script:
    """Register script `name` on `client` (EVALSHA, with a transparent EVAL fallback)."""
    return client.register_script(source(name, *libraries))
