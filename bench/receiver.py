"""A fast receipt counter for benchmarks: `python -m bench.receiver PORT`; GET /count.

Counts receipts by level (a `dlr-batch` POST holds many) and requests (`requests`). With
`?timed=1` in the receipt URL it also keeps, for each single receipt, how long after its event
(`done_at`) it arrived; GET /latency reports p50 / p99 / max in ms.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from datetime import datetime

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

counts: Counter[str] = Counter()
latencies: list[float] = []  # ms from a receipt's event to its arrival (`?timed=1` only)


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
        if request.query_params.get("timed"):
            event = orjson.loads(body).get("done_at")
            if event:
                at = datetime.fromisoformat(event.replace("Z", "+00:00")).timestamp()
                latencies.append((time.time() - at) * 1000)
    return Response(b"", status_code=200)


async def count(_: Request) -> Response:
    return JSONResponse(dict(counts))


async def latency(_: Request) -> Response:
    ordered = sorted(latencies)
    if not ordered:
        return JSONResponse({"count": 0})
    return JSONResponse({
        "count": len(ordered),
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
    })  # fmt: skip


app = Starlette(
    routes=[
        Route("/count", count),
        Route("/latency", latency),
        Route("/r", receive, methods=["GET", "POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
