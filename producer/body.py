"""Request bodies in: size limit (413), JSON with line and column (400), model validation (422)."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import pydantic

from producer.errors import BadRequestError, PayloadTooLargeError, field_name
from worker.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)


def parse_json_body(raw: bytes, limit: int) -> Any:
    """The JSON body, or a 400 that says where it broke (line and column), or 413."""
    if len(raw) > limit:
        raise PayloadTooLargeError(f"body larger than {limit} bytes", code="too_large")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            code="malformed_json",
        ) from None


def parse_model(model: type[M], data: Any) -> M:
    """Validate a JSON value against a body model; 422 naming the first offending field."""
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", code="invalid")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = field_name(tuple(first["loc"]))
        raise ValidationError(f"{field}: {first['msg']}", field=field, code=first["type"]) from None


def json_body_openapi(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body we parse ourselves."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
        }
    }
