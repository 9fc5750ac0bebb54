"""`GET /sms`: an API key's messages, newest first, a page at a time.

Every message is indexed under its key when it is stored (`worker.store.key_messages_key`, in
the same transaction as the message): a sorted set of ids with equal scores, so a range of it
is a lexicographic range of ids, and ids begin with their creation time. A page is one
`ZREVRANGEBYLEX` below the cursor (O(log n + page) at any size) and one pipelined `HMGET` of
the candidates. `since` / `until` bound the range itself; `to`, `status` and `batch_id` are
checked on the candidates, and a page looks at no more than `SCAN_BUDGET` of them: a rare
filter value can give a short or even empty page with a `next_cursor` — follow it until it is
null. Index entries whose message is gone are dropped when a page meets them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from producer.views import SUMMARY_FIELDS, message_summary
from worker.contract import MessageStatus
from worker.errors import ValidationError
from worker.store import Store, key_messages_key, message_key

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
SCAN_BUDGET = 2_000  # index entries one page may examine
_ID = re.compile(r"[0-9a-f]{32}")
STATUSES = frozenset(s.value for s in MessageStatus)


@dataclass(frozen=True, slots=True)
class Filters:
    """What a listing keeps; every field optional. Times are UTC milliseconds, inclusive."""

    to: str | None = None
    statuses: frozenset[str] = frozenset()
    since: int | None = None
    until: int | None = None
    batch_id: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def parse_time(raw: str, field: str) -> int:
    """ISO 8601 (no zone means UTC) or epoch milliseconds, as milliseconds."""
    text = raw.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{field} must be an ISO 8601 time such as 2026-12-01T09:00:00Z, or epoch ms",
            field=field,
            code="invalid_time",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_statuses(raw: str) -> frozenset[str]:
    """`queued` or `queued,scheduled`; 422 naming an unknown one."""
    wanted = frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
    unknown = sorted(wanted - STATUSES)
    if unknown:
        raise ValidationError(
            f"unknown status {', '.join(unknown)}; known: {', '.join(sorted(STATUSES))}",
            field="status",
            code="invalid",
        )
    return wanted


def check_id(value: str, field: str) -> str:
    if not _ID.fullmatch(value):
        raise ValidationError(f"{field} must be 32 hex characters", field=field, code="invalid")
    return value


def _bounds(filters: Filters) -> tuple[str, str]:
    """The lexicographic range of ids to walk down: (upper, lower)."""
    upper = "+"
    if filters.until is not None:
        upper = f"({filters.until + 1:012x}"
    if filters.cursor is not None and (upper == "+" or f"({filters.cursor}" < upper):
        upper = f"({filters.cursor}"
    lower = "-" if filters.since is None else f"[{filters.since:012x}"
    return upper, lower


def _keeps(filters: Filters, fields: dict[str, str]) -> bool:
    return (
        (filters.to is None or fields.get("to") == filters.to)
        and (not filters.statuses or fields.get("status") in filters.statuses)
        and (filters.batch_id is None or fields.get("batch_id") == filters.batch_id)
    )


def list_messages(store: Store, key_id: str, filters: Filters) -> dict[str, Any]:
    """One page: `{"messages": [...], "next_cursor": id or None}` (None: nothing older)."""
    index = key_messages_key(key_id)
    upper, lower = _bounds(filters)
    found: list[dict[str, Any]] = []
    scanned, last = 0, None
    while len(found) < filters.limit and scanned < SCAN_BUDGET:
        ask = min(SCAN_BUDGET - scanned, max(filters.limit - len(found), 50))
        ids = cast(list[str], store.redis.zrevrangebylex(index, upper, lower, 0, ask))
        last = _collect(store, index, ids, filters, found)
        if len(ids) < ask and len(found) < filters.limit:
            return {"messages": found, "next_cursor": None}  # the index has nothing older
        scanned += len(ids)
        upper = f"({last}"
    return {"messages": found, "next_cursor": last}


def _collect(
    store: Store, index: str, ids: list[str], filters: Filters, found: list[dict[str, Any]]
) -> str | None:
    """Add the messages of `ids` that pass the filters to `found` (up to the limit); drop
    index entries whose message is gone. Returns the last id looked at (the next cursor)."""
    pipe = store.redis.pipeline(transaction=False)
    for message_id in ids:
        pipe.hmget(message_key(message_id), SUMMARY_FIELDS)
    gone, last = [], None
    for message_id, values in zip(ids, pipe.execute(), strict=True):
        last = message_id
        fields = {k: v for k, v in zip(SUMMARY_FIELDS, values, strict=True) if v is not None}
        if not fields:
            gone.append(message_id)
        elif _keeps(filters, fields):
            found.append(message_summary(fields))
            if len(found) == filters.limit:
                break
    if gone:
        store.redis.zrem(index, *gone)
    return last
