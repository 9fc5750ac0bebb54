"""Turning a validated HTTP body into a stored message: numbers, sender, URL, times, encoding."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

import phonenumbers

from producer.schemas import SendRequest
from worker.clock import now_ms
from worker.contract import DlrMethod, MessageStatus, Priority
from worker.encoding import Summary, is_gsm7, normalize_coding, summarize
from worker.errors import UnsafeUrlError, ValidationError
from worker.geo import GeoPermissions
from worker.settings import Settings
from worker.ssrf import check_url, parse_denied, parse_networks
from worker.store import Message, new_message_id

MAX_SCHEDULE_AHEAD_MS = 365 * 24 * 3600 * 1000
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,15}")
_ALPHANUMERIC_SENDER = re.compile(r"[A-Za-z0-9 ._&'-]{1,11}")


# Why phonenumbers could not read a number, in the user's terms (it speaks of a plus-sign
# that the user may never have typed: we add it).
_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "does not start with a country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "is not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "is too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "is too short",
    phonenumbers.NumberParseException.TOO_LONG: "is too long",
}
INTERNATIONAL_FORMAT = "international format: +, country code, number, e.g. +447911123456"


@lru_cache(maxsize=65_536)  # campaigns and OTPs repeat numbers; parsing costs ~0.1 ms
def normalize_number(raw: str, field: str = "to") -> str:
    """E.164 (`+` and digits) for a valid phone number; ValidationError otherwise.

    The leading `+` is optional, and the international call prefix `00` is read as `+`
    (`0044 7911 123456` is `+447911123456`), as on a phone in most of the world.
    """
    text = raw.strip()
    if not text:
        raise ValidationError("a phone number is required", field=field, code="required")
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        reason = _PARSE_ERRORS.get(exc.error_type, "cannot be read")
        raise ValidationError(
            f"{field} {reason}: it must be in {INTERNATIONAL_FORMAT} (a leading 00 is written +)",
            field=field,
            code="invalid_number",
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(
            f"{field} is not a valid phone number: it must be in {INTERNATIONAL_FORMAT}",
            field=field,
            code="invalid_number",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_sender(sender: str) -> str:
    """A numeric sender (≤ 15 digits) or an alphanumeric one (≤ 11 GSM characters)."""
    if _NUMERIC_SENDER.fullmatch(sender):
        return sender
    if _ALPHANUMERIC_SENDER.fullmatch(sender) and is_gsm7(sender):
        return sender
    raise ValidationError(
        "sender must be a number of up to 15 digits or up to 11 letters, digits and spaces",
        field="from",
        code="invalid_sender",
    )


def parse_send_at(raw: str, now: int) -> int:
    """Milliseconds for an ISO 8601 time (no zone means UTC); at most a year ahead."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValidationError(
            "send_at must be an ISO 8601 time such as 2026-12-01T09:00:00Z",
            field="send_at",
            code="invalid_time",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    at = int(moment.timestamp() * 1000)
    if at - now > MAX_SCHEDULE_AHEAD_MS:
        raise ValidationError(
            "send_at is more than a year ahead", field="send_at", code="invalid_time"
        )
    return at


def check_receipt_url(url: str, settings: Settings, field: str = "dlr-url") -> str:
    """The normalised URL if receipts may go there; 422 naming the field with the reason."""
    try:
        allowed = parse_networks(settings.dlr_allow_private)
        return check_url(url, allow_private=allowed, deny=parse_denied(settings.dlr_deny)).url
    except UnsafeUrlError as exc:
        raise ValidationError(exc.message, field=field, code="unsafe_url") from None


def encoding_summary(body: SendRequest) -> Summary:
    try:
        coding = normalize_coding(body.coding)
    except ValidationError as exc:
        raise ValidationError(exc.message, field="coding", code="invalid_coding") from None
    if not body.content:
        raise ValidationError("content must not be empty", field="content", code="required")
    return summarize(body.content, coding, max_segments=body.max_segments or 255)


def wants_receipts(body: SendRequest) -> bool:
    """`dlr` as given, else true when a `dlr-url` is (a URL alone asks for receipts, as on
    `/otp/send`; `"dlr": false` keeps it unused)."""
    return body.dlr if body.dlr is not None else bool(body.dlr_url)


def build_message(
    body: SendRequest,
    settings: Settings,
    *,
    key_id: str,
    batch_id: str = "",
    otp: bool = False,
    geo: GeoPermissions | None = None,
) -> tuple[Message, Summary]:
    """Validate everything about a send request; return the message to store and its summary.

    `geo`: the calling key's geo permissions (default: the deployment's allowed countries).
    """
    to = normalize_number(body.to)
    (geo or GeoPermissions.for_key((), settings)).check(to)
    sender = check_sender(body.from_ if body.from_ is not None else settings.default_from)
    dlr = wants_receipts(body)
    if dlr and not body.dlr_url:
        raise ValidationError(
            "dlr-url is required when dlr is true", field="dlr-url", code="required"
        )
    dlr_url = check_receipt_url(body.dlr_url, settings) if body.dlr_url else ""
    summary = encoding_summary(body)
    now = now_ms()
    send_at = parse_send_at(body.send_at, now) if body.send_at else None
    scheduled = send_at is not None and send_at > now + 1000
    start = send_at if scheduled and send_at is not None else now
    message = Message(
        id=new_message_id(now),
        to=to,
        sender=sender,
        content=body.content,
        coding=normalize_coding(body.coding),
        priority=Priority(body.priority),
        dlr=dlr,
        dlr_level=body.dlr_level,
        dlr_url=dlr_url,
        dlr_method=DlrMethod(body.dlr_method),
        dlr_batch=body.dlr_batch,
        client_ref=body.client_ref or "",
        key_id=key_id,
        encoding=summary.encoding,
        segments=summary.segments,
        characters=summary.characters,
        status=MessageStatus.SCHEDULED if scheduled else MessageStatus.QUEUED,
        created_at=now,
        send_at=send_at if scheduled else None,
        validity_until=start + body.validity * 1000 if body.validity else None,
        max_segments=body.max_segments or 255,
        batch_id=batch_id,
        otp=otp,
    )
    return message, summary
