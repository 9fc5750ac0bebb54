"""HTTP request and response bodies (the HTTP body is not the queue message)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

MAX_CONTENT_CHARS = 255 * 160  # the longest text 255 GSM-7 segments could ever carry, roughly


class SendRequest(BaseModel):
    """`POST /sms/send`: the body users already know (Jasmin / Kannel style keys)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)

    to: str = Field(description="Recipient, E.164 (leading + optional)", max_length=32)
    from_: str | None = Field(
        None, alias="from", description="Alphanumeric (≤ 11 GSM characters) or a number"
    )
    content: str = Field(description="The text, any Unicode", max_length=MAX_CONTENT_CHARS)
    dlr: bool | None = Field(
        None, description="Ask for delivery receipts; default: true when dlr-url is given"
    )
    dlr_level: Literal[1, 2, 3] = Field(
        1, alias="dlr-level", description="1 = carrier, 2 = handset, 3 = both"
    )
    dlr_url: str | None = Field(None, alias="dlr-url", description="Where receipts go")
    dlr_method: Literal["GET", "POST"] = Field(
        "POST", alias="dlr-method", description="GET or POST, any case"
    )
    dlr_batch: bool = Field(
        False,
        alias="dlr-batch",
        description="Deliver receipts together with others to the same dlr-url (POST only)",
    )
    coding: str | int = Field("auto", description="auto, GSM7, UCS2, UTF-8, 0 or 8")
    priority: Literal["otp", "normal", "bulk"] = "normal"
    send_at: str | None = Field(None, description="ISO 8601; send later (durable)")
    validity: int | None = Field(
        None, ge=1, le=7 * 24 * 3600, description="Seconds; expire if not submitted by then"
    )
    max_segments: int | None = Field(None, ge=1, le=255)
    client_ref: str | None = Field(None, max_length=64, description="Echoed in every receipt")

    @field_validator("dlr_batch")
    @classmethod
    def _batch_needs_a_body(cls, value: bool, info: ValidationInfo) -> bool:
        return check_dlr_batch(value, info)

    @field_validator("dlr_method", mode="before")
    @classmethod
    def _method_in_any_case(cls, value: object) -> object:
        return upper_method(value)


def upper_method(value: object) -> object:
    """`dlr-method` in any case (`get`, `Post`) as GET or POST; anything else as it came."""
    return value.upper() if isinstance(value, str) else value


def check_dlr_batch(value: bool, info: ValidationInfo) -> bool:
    """`dlr-batch` sends receipts as one JSON body: it cannot go with `dlr-method` GET."""
    if value and info.data.get("dlr_method") == "GET":
        raise ValueError("dlr-batch needs dlr-method POST: a batch of receipts is a JSON body")
    return value


MAX_BATCH = 100_000


class Recipient(BaseModel):
    """One recipient of a templated batch, with the values of its `{variables}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str = Field(max_length=32)
    vars: dict[str, str | int | float] = Field(default_factory=dict)
    client_ref: str | None = Field(None, max_length=64)


class QuietHoursWindow(BaseModel):
    """Local times (HH:MM) between which bulk messages wait, e.g. 21:00 to 08:00."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")


class BatchRequest(BaseModel):
    """`POST /sms/batch`: a list of messages, or one template and its recipients."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)

    batch_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="Append to this batch (uploads in chunks)"
    )
    messages: list[dict[str, object]] | None = Field(None, max_length=MAX_BATCH)
    content: str | None = Field(None, description="Template with {name} variables")
    recipients: list[str | Recipient] | None = Field(None, max_length=MAX_BATCH)
    from_: str | None = Field(None, alias="from")
    dlr: bool | None = Field(None, description="Default: true when dlr-url is given")
    dlr_level: Literal[1, 2, 3] = Field(1, alias="dlr-level")
    dlr_url: str | None = Field(None, alias="dlr-url")
    dlr_method: Literal["GET", "POST"] = Field("POST", alias="dlr-method")
    dlr_batch: bool = Field(False, alias="dlr-batch")
    coding: str | int = "auto"
    priority: Literal["otp", "normal", "bulk"] = "bulk"
    send_at: str | None = None
    validity: int | None = Field(None, ge=1, le=7 * 24 * 3600)
    max_segments: int | None = Field(None, ge=1, le=255)
    batch_callback_url: str | None = Field(
        None, max_length=2048, description="Gets signed batch.progress / batch.completed events"
    )
    quiet_hours: QuietHoursWindow | None = Field(
        None, description="Hold messages while it is within this window at the recipient's end"
    )

    @field_validator("dlr_batch")
    @classmethod
    def _batch_needs_a_body(cls, value: bool, info: ValidationInfo) -> bool:
        return check_dlr_batch(value, info)

    @field_validator("dlr_method", mode="before")
    @classmethod
    def _method_in_any_case(cls, value: object) -> object:
        return upper_method(value)

    @model_validator(mode="after")
    def _one_shape(self) -> BatchRequest:
        if (self.messages is None) == (self.recipients is None):
            raise ValueError("give either `messages` or `content` with `recipients`")
        if self.recipients is not None and not self.content:
            raise ValueError("`recipients` needs a `content` template")
        return self


class SendAccepted(BaseModel):
    """202 reply of `POST /sms/send`."""

    id: str
    status: Literal["queued", "scheduled"]
    to: str
    encoding: Literal["gsm7", "ucs2"]
    segments: int
    characters: int


class MessagePage(BaseModel):
    """200 reply of `GET /sms`: messages newest first (as `GET /sms/{id}` without segments,
    receipts and events); `next_cursor` is null on the last page."""

    messages: list[dict[str, Any]]
    next_cursor: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error reply: `{"error": {"code", "message", "field"}}`."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 405, 409, 413, 415, 422, 429)
}
