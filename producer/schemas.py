"""HTTP request and response bodies (the HTTP body is not the queue message)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_CONTENT_CHARS = 255 * 160  # the longest text 255 GSM-7 segments could ever carry, roughly


class SendRequest(BaseModel):
    """`POST /sms/send`: the body users already know (Jasmin / Kannel style keys)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)

    to: str = Field(description="Recipient, E.164 (leading + optional)", max_length=32)
    from_: str | None = Field(
        None, alias="from", description="Alphanumeric (≤ 11 GSM characters) or a number"
    )
    content: str = Field(description="The text, any Unicode", max_length=MAX_CONTENT_CHARS)
    dlr: bool = Field(False, description="Ask for delivery receipts")
    dlr_level: Literal[1, 2, 3] = Field(
        1, alias="dlr-level", description="1 = carrier, 2 = handset, 3 = both"
    )
    dlr_url: str | None = Field(None, alias="dlr-url", description="Where receipts go")
    dlr_method: Literal["GET", "POST"] = Field("POST", alias="dlr-method")
    coding: str | int = Field("auto", description="auto, GSM7, UCS2, UTF-8, 0 or 8")
    priority: Literal["otp", "normal", "bulk"] = "normal"
    send_at: str | None = Field(None, description="ISO 8601; send later (durable)")
    validity: int | None = Field(
        None, ge=1, le=7 * 24 * 3600, description="Seconds; expire if not submitted by then"
    )
    max_segments: int | None = Field(None, ge=1, le=255)
    client_ref: str | None = Field(None, max_length=64, description="Echoed in every receipt")


class SendAccepted(BaseModel):
    """202 reply of `POST /sms/send`."""

    id: str
    status: Literal["queued", "scheduled"]
    to: str
    encoding: Literal["gsm7", "ucs2"]
    segments: int
    characters: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error reply: `{"error": {"code", "message", "field"}}`."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 429)
}
