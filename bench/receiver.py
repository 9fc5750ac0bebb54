"""A fast receipt counter for benchmarks: `python -m bench.receiver PORT`; GET /count.

Counts receipts by level (a `dlr-batch` POST holds many) and requests (`requests`)."""

from __future__ import annotations

import sys
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

counts: Counter[str] = Counter()


async def receive(request: Request) -> Response:
    counts["requests"] += 1
    level = request.query_params.get("level")
    if level is not None:
        counts[level] += 1
        return Response(b"", status_code=200)
    body = await request.body()
    if body.startswith(b'{"receipts"'):
        counts["1"] += body.count(b'"level":1,')
        counts["2"] += body.count(b'"level":2,')
    else:
        counts["2" if b'"level":2' in body else "1"] += 1
    return Response(b"", status_code=200)


async def count(_: Request) -> Response:
    return JSONResponse(dict(counts))


app = Starlette(routes=[Route("/count", count), Route("/r", receive, methods=["GET", "POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
