"""The simulator's Starlette app: `/submit`, `/stats`, `/reset`, `/outage`, `/mo`."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.simulator.config import SimulatorConfig
from worker.simulator.mo import MoRequestError, MoSender
from worker.simulator.receipts import ReceiptSender
from worker.simulator.script import Script
from worker.simulator.state import BadPayloadError, Segment, SimulatorState


def _json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    return _json({"error": {"code": code, "message": message}}, status, headers)


def _str(body: Mapping[str, object], key: str, *, optional: bool = False) -> str:
    value = body.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string")
    return value


def parse_submission(raw: bytes) -> tuple[Segment, str | None]:
    """The segment and receipt URL in a `/submit` body; ValueError when malformed."""
    body = orjson.loads(raw)  # JSONDecodeError is a ValueError
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    data_coding = body.get("data_coding")
    if not isinstance(data_coding, int) or isinstance(data_coding, bool):
        raise ValueError("'data_coding' must be an integer")
    receipt_url = _str(body, "receipt_url", optional=True) or None
    if receipt_url is not None and not receipt_url.startswith(("http://", "https://")):
        raise ValueError("'receipt_url' must be an http(s) URL")
    segment = Segment(
        to=_str(body, "to"),
        sender=_str(body, "from"),
        udh=bytes.fromhex(_str(body, "udh", optional=True)),
        payload=bytes.fromhex(_str(body, "payload")),
        data_coding=data_coding,
        client_ref=_str(body, "client_ref"),
        text=_str(body, "text", optional=True),
    )
    if not segment.to or not segment.client_ref:
        raise ValueError("'to' and 'client_ref' must not be empty")
    return segment, receipt_url


class Simulator:
    """Request handlers over one state, one RNG and one receipt sender."""

    def __init__(self, config: SimulatorConfig, state: SimulatorState | None = None) -> None:
        self.config = config
        self.state = state or SimulatorState()
        self.receipts = ReceiptSender(
            self.state,
            delay=config.receipt_delay,
            attempts=config.receipt_attempts,
            timeout=config.receipt_timeout,
            concurrency=config.receipt_concurrency,
            batch=config.receipt_batch,
            batch_window=config.receipt_batch_window_ms / 1000.0,
            secret=config.receipt_secret,
        )
        self.mo = MoSender(config.mo_url, config.receipt_secret, config.receipt_timeout)
        self._rng = random.Random(config.seed)  # a simulation, not a secret
        self.script = Script(config, self._rng)

    async def submit(self, request: Request) -> Response:
        """Accept, refuse or fail one segment as scripted."""
        try:
            segment, receipt_url = parse_submission(await request.body())
        except ValueError as exc:
            return self._fail(400, "bad_request", str(exc))
        await self._latency()
        scripted = self._scripted_failure(segment.to)
        if scripted is not None:
            return scripted
        first = self.state.carrier_ids.get(segment.client_ref)
        if first is not None and self.config.dedupe_client_refs:
            self.state.deduplicated += 1  # an idempotency key seen before: no second SMS
            return _json({"carrier_id": first})
        try:
            decoded = self.state.decode(segment)
        except BadPayloadError as exc:
            return self._fail(400, "bad_payload", str(exc))
        self.state.record(segment, decoded)
        carrier_id = f"sim-{uuid.uuid4().hex}"
        self.state.carrier_ids.setdefault(segment.client_ref, carrier_id)
        if receipt_url is not None:
            last_part = decoded.total == 1 or decoded.seq == decoded.total
            for planned in self.script.receipts(self._final_status(), last_part=last_part):
                self.receipts.schedule(receipt_url, carrier_id, planned.status, planned.delay)
        return _json({"carrier_id": carrier_id})

    async def stats(self, request: Request) -> Response:
        """Counters for tests."""
        return _json(self.state.stats())

    async def reset(self, request: Request) -> Response:
        """Forget every submission and drop the receipts not yet sent."""
        await self.receipts.cancel_pending()
        self.state.reset()
        self.script.restart()
        return _json({"reset": True})

    async def outage(self, request: Request) -> Response:
        """Script an outage: `{"down": true}` (until told), `{"seconds": N}`, `{"down": false}`."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "bad_request", "body must be a JSON object")
        seconds = body.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            self.script.set_outage(float(seconds))
        elif isinstance(body.get("down"), bool):
            self.script.set_outage(None if body["down"] else 0.0)
        else:
            return _error(400, "bad_request", "give 'down' (bool) or 'seconds' (>= 0)")
        return _json({"down": self.script.is_down()})

    async def send_mo(self, request: Request) -> Response:
        """Send an inbound message to smsq (`worker.simulator.mo`); smsq's answers."""
        try:
            body = orjson.loads(await request.body())
            answers = await self.mo.send(body)
        except (orjson.JSONDecodeError, MoRequestError) as exc:
            return _error(400, "bad_request", str(exc))
        return _json({"sent": len(answers), "answers": answers})

    async def _latency(self) -> None:
        delay = self.script.latency()
        if delay > 0:
            await asyncio.sleep(delay)

    def _scripted_failure(self, to: str) -> Response | None:
        if self.script.is_down():
            return self._fail(503, "outage", "scripted carrier outage")
        if self.config.reject_prefixes and to.startswith(self.config.reject_prefixes):
            return self._fail(400, "invalid_destination", "destination refused by prefix")
        wait = self.script.throttle()
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            return self._fail(
                429, "throughput", "over the throughput limit", **{"retry-after": retry_after}
            )
        roll = self._rng.random()
        if roll < self.config.error_rate_429:
            retry_after = f"{self.config.retry_after:g}"
            return self._fail(429, "throttled", "too many requests", **{"retry-after": retry_after})
        if roll < self.config.error_rate_429 + self.config.error_rate_5xx:
            return self._fail(503, "unavailable", "scripted carrier failure")
        if (
            roll
            < self.config.error_rate_429 + self.config.error_rate_5xx + self.config.error_rate_4xx
        ):
            return self._fail(400, "rejected", "scripted rejection")
        return None

    def _final_status(self) -> str:
        roll = self._rng.random()
        if roll < self.config.undelivered_ratio:
            return "UNDELIV"
        if roll < self.config.undelivered_ratio + self.config.expired_ratio:
            return "EXPIRED"
        return "DELIVRD"

    def _fail(self, status: int, code: str, message: str, **headers: str) -> Response:
        self.state.errors[code] += 1
        return _error(status, code, message, **headers)


def create_simulator_app(config: SimulatorConfig | None = None) -> Starlette:
    """A Starlette app that acts as an SMSC over HTTP (protocol in `worker.simulator`)."""
    simulator = Simulator(config or SimulatorConfig())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await simulator.receipts.start()
        await simulator.mo.start()
        try:
            yield
        finally:
            await simulator.mo.stop()
            await simulator.receipts.stop()

    app = Starlette(
        routes=[
            Route("/submit", simulator.submit, methods=["POST"]),
            Route("/stats", simulator.stats, methods=["GET"]),
            Route("/reset", simulator.reset, methods=["POST"]),
            Route("/outage", simulator.outage, methods=["POST"]),
            Route("/mo", simulator.send_mo, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.simulator = simulator
    return app
