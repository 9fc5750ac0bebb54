"""The HTTP API application (FastAPI): `uvicorn --factory producer.api:create_app`.

The event loop only moves bytes. One rule for every route, so that no request waits behind
another's work (a campaign's validation, a Redis round trip):

- An endpoint is a plain `def`: FastAPI runs it in its thread pool. Everything that touches
  Redis or costs CPU (validation, encoding, JSON of a large body) happens there, through the
  desks (`producer.desk.MessageDesk`, `producer.otp.OtpDesk`), which are synchronous.
- An `async def` endpoint or dependency is an exception named in `ASYNC_ALLOWED`, with its
  reason: it may await the request body and hand work to a thread (`run_in_threadpool`, one
  bounded step per call, as `POST /sms/batch` does 2,000 recipients at a time; or the intake
  thread that writes single sends in groups, `producer.intake`), and do nothing else that
  blocks or takes long.

`tests/unit/test_api_routes.py` walks the app's routes and their dependencies and fails for
any `async def` that is not on the list. docs/api.md has the same rule for readers.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from uvicorn.supervisors import Multiprocess

from producer import errors
from producer.responses import JsonResponse
from producer.routes import batch, carriers, health, metrics, mo, otp, sms
from producer.server import server_config
from producer.services import Services, build_services
from worker.settings import Settings, get_settings

# `module.qualname` of each allowed `async def`, and why it may run on the loop.
ASYNC_ALLOWED: dict[str, str] = {
    "producer.services.get_services": "reads app.state, no I/O",
    "producer.services.json_body": "awaits the request body; parsed later in the thread pool",
    "producer.services.require.<locals>.key_dependency": (
        "the key from the process cache; lookup and admission via run_in_threadpool"
    ),
    "producer.services.require_one_message.<locals>.key_dependency": (
        "as require, the charge and refund via run_in_threadpool"
    ),
    "fastapi.security.http.HTTPBearer.__call__": "FastAPI's own: reads a header",
    "producer.routes.sms.send": (
        "the hot path: awaits the body, then the intake thread does all the rest"
    ),
    "producer.routes.batch.create_batch": (
        "awaits the body, then each bounded ingest step via run_in_threadpool"
    ),
    "producer.routes.carriers.carrier_receipt": (
        "awaits the body (needs it raw), then one run_in_threadpool for Redis"
    ),
    "producer.routes.mo.carrier_mo": (
        "awaits the body (needs it raw), checks it (HMAC), then one run_in_threadpool: parse "
        "and store"
    ),
    "producer.routes.health.healthz": "no I/O: the loop answering is the check",
    "producer.routes.health.readyz": "its checks run via run_in_threadpool",
    "producer.routes.metrics.metrics_endpoint": "the exposition runs via run_in_threadpool",
    "fastapi.applications.FastAPI.setup.<locals>.openapi": "FastAPI's own: the cached schema",
    "fastapi_offline.core.FastAPIOffline.<locals>.custom_swagger_ui_html": "static HTML",
    "fastapi_offline.core.FastAPIOffline.<locals>.swagger_ui_redirect": "static HTML",
    "fastapi_offline.core.FastAPIOffline.<locals>.redoc_html": "static HTML",
}


# How long a thread may hold the interpreter lock while another waits for it (Python's default
# is 5 ms): while a batch step runs Python in the thread pool, the event loop gets the lock back
# within this time, on each of the few times a request needs it.
SWITCH_INTERVAL_SECONDS = 0.001


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At shutdown, stop the batch helper process (if one was started)."""
    yield
    batches = app.state.services.batches
    if batches is not None:
        await run_in_threadpool(batches.close)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The API with its services built from `settings` (the environment by default).

    `/docs` (Swagger UI) and `/redoc` load their scripts and styles from the API itself
    (`fastapi-offline` ships them), so they work without internet access."""
    app = FastAPIOffline(
        title="smsq",
        version="0.1.0",
        description="Send SMS and OTP codes at volume, with signed delivery receipts.",
        default_response_class=JsonResponse,
        lifespan=lifespan,
    )
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    app.state.services = services or build_services(settings or get_settings())
    errors.install(app)
    # Matched in this order: the busiest routes first (single sends, OTP, carrier receipts).
    app.include_router(sms.router)
    app.include_router(otp.router)
    app.include_router(carriers.router)
    app.include_router(mo.router)
    app.include_router(batch.router)
    app.include_router(health.router)
    metrics.install(app)  # /metrics, logs, request and OTP counts (after the routes)
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound as TCP (`IPPROTO_TCP`).

    uvicorn's own `--workers` binds without naming the protocol (proto 0); asyncio then leaves
    Nagle's algorithm on for every connection it accepts, and each keep-alive request waits
    about 40 ms for a delayed ACK (measured: 710 requests/s at 32 connections, every one 45 ms).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(host: str, port: int, processes: int = 1, log_level: str = "warning") -> None:
    """Run the API on `host:port` with `processes` uvicorn processes sharing the port
    (`python -m producer.api --processes N`)."""
    # The bounds of `producer.server` (header timeout, connection limit) in every process.
    config = server_config(get_settings(), host, port, log_level)
    config.workers = processes
    config.ws = "none"
    sock = listening_socket(host, port)
    if processes > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the smsq API (uvicorn) on one port.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    serve(args.host, args.port, args.processes, args.log_level)


if __name__ == "__main__":
    main()
