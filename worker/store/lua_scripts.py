"""Every Lua script of smsq, kept in `worker/store/lua/*.lua` and loaded here.

A script is its `.lua` file, after the prelude and the library files it names (functions such
as `receipt_snapshot`, `charge`); each file's header says its KEYS, ARGV and what it
guarantees. The prelude is rendered from the contract's enums, so that state names and receipt
levels are written once (in Python) and never copied by hand; scripts that use none of it
(limits, breaker, OTP, scheduler) run without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from worker.contract import (
    CANCELLABLE_STATUSES,
    FINAL_STATUSES,
    RECEIPT_DONE,
    RECEIPT_OK_STATUSES,
    SEGMENTS_FAILED,
    SEGMENTS_TAKEN,
    ReceiptLevel,
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
            # `dlr_level` values (as stored: '1', '2', '3') that ask for each receipt level
            lua_set("WANTS_SMSC", _levels(ReceiptLevel.wants_smsc)),
            lua_set("WANTS_TERMINAL", _levels(ReceiptLevel.wants_terminal)),
        ]
    )


def _levels(wants: Callable[[int], bool]) -> list[str]:
    levels = (ReceiptLevel.SMSC, ReceiptLevel.TERMINAL, ReceiptLevel.BOTH)
    return [str(level) for level in levels if wants(level)]


@cache
def read(name: str) -> str:
    """The text of `lua/{name}.lua`."""
    return (LUA_DIR / f"{name}.lua").read_text()


def source(name: str, *libraries: str, with_prelude: bool = True) -> str:
    """A runnable script: the prelude, the named library files, then `name`'s body."""
    head = prelude() if with_prelude else ""
    return head + "".join(read(library) for library in libraries) + read(name)


def register(
    client: redis.Redis, name: str, *libraries: str, with_prelude: bool = True
) -> Script:
    """Register script `name` on `client` (EVALSHA, with a transparent EVAL fallback)."""
    return client.register_script(source(name, *libraries, with_prelude=with_prelude))


def each(
    client: redis.Redis, call: Callable[..., Any], items: Sequence[Sequence[Any]]
) -> list[Any]:
    """`call(client_or_pipeline, *item)` for every item in one round trip (a single item is
    sent alone).

    redis-py asks SCRIPT EXISTS before every pipeline that runs scripts: a round trip of its
    own, a tenth of the receipt engine's time. Here the pipeline runs its EVALSHAs directly; a
    script the server does not know (after a restart or SCRIPT FLUSH) answers NOSCRIPT and did
    not run, so just those items are run again, one by one, loading their script. The
    pipeline is not a transaction: every other item ran once."""
    if not items:
        return []
    if len(items) == 1:
        return [call(client, *items[0])]
    pipe = client.pipeline(transaction=False)
    for item in items:
        call(pipe, *item)
    pipe.scripts.clear()
    answers = list(pipe.execute(raise_on_error=False))
    for index, answer in enumerate(answers):
        if isinstance(answer, NoScriptError):
            answers[index] = call(client, *items[index])
    failed = next((a for a in answers if isinstance(a, Exception)), None)
    if failed is not None:
        raise failed
    return answers


# The libraries each script runs with (their functions), besides the prelude.
_SNAPSHOT = ("snapshot", "open_receipt_lib")
_FINISH = (*_SNAPSHOT, "finish_submission_lib")


@dataclass(frozen=True, slots=True)
class Scripts:
    """The message store's scripts (`worker.store.Store`), registered on one client."""

    transition: Script
    concat_reference: Script
    begin_send: Script
    claim_segment: Script
    release_segment: Script
    record_accepted: Script
    park_receipt: Script
    mark_unknown: Script
    finish_submission: Script
    accept_and_finish: Script
    apply_receipt: Script
    open_receipt: Script
    replay_receipt: Script
    cancel_message: Script
    carrier_id_link: Script


def load(client: redis.Redis) -> Scripts:
    """Register every script of the message store on `client`."""
    return Scripts(
        transition=register(client, "transition", "transition_lib"),
        concat_reference=register(client, "concat_reference"),
        begin_send=register(client, "begin_send"),
        claim_segment=register(client, "claim_segment"),
        release_segment=register(client, "release_segment"),
        record_accepted=register(client, "record_accepted", "record_accepted_lib"),
        park_receipt=register(client, "park_receipt"),
        mark_unknown=register(client, "mark_unknown"),
        finish_submission=register(client, "finish_submission", *_FINISH),
        accept_and_finish=register(
            client, "accept_and_finish", "record_accepted_lib", *_FINISH
        ),
        apply_receipt=register(client, "apply_receipt", *_FINISH),
        open_receipt=register(client, "open_receipt", *_SNAPSHOT),
        replay_receipt=register(client, "replay_receipt"),
        cancel_message=register(client, "cancel_message", *_SNAPSHOT),
        carrier_id_link=register(client, "carrier_id_link"),
    )
