"""A JSON response rendered with orjson (compact, fast, UTF-8)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JsonResponse(JSONResponse):
    """A `JSONResponse` (so the OpenAPI document shows the JSON schemas of the answers)
    rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
