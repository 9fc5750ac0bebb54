"""Forged carrier receipts change nothing, for every carrier type, against the real system.

One API, one worker and the scheduler on the session's Redis, with four carriers of a carriers
file: the simulator (`sim`, signing its receipts with a `receipt_secret`), a generic JSON
carrier (`http`), a real Kannel (`kannel`, when installed) and a Twilio stand-in (`twilio`).
The carriers call back through a gate that takes their receipt requests and hands them to the
API only when the test opens it. For each carrier a message is sent and accepted, its genuine
receipt held at the gate; then unauthenticated and forged requests go to `/carriers/{name}/dlr`:
each is refused (or, a valid token of another segment, refused when applied), and afterwards
Redis holds exactly the smsq keys it held before and the message is as it was. Then the gate
opens and the genuine receipt delivers the message.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from redis import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.integration.carrier_stack import CarrierStack, carrier_stack
from tests.integration.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.integration.kannel import KANNEL_MISSING, PASSWORD, USERNAME, running_kannel
from tests.integration.stack import RECEIPT_SECRET, SECRET_KEY, wait_for
from tests.servers import serve_app
from worker.carriers.twilio import signature as twilio_signature
from worker.receipts.tokens import receipt_key, segment_token
from worker.simulator import SimulatorConfig, create_simulator_app
from worker.store.keys import (
    BATCH_WATCH_LOCK_KEY,
    INBOX_KEY,
    INBOX_SEQ_KEY,
    PREFIX,
    SCHEDULER_LOCK_KEY,
)
from worker.webhooks import generate_secret, signature_headers

pytestmark = pytest.mark.integration

# Destinations by carrier (longest prefix wins), all valid German mobile numbers.
NUMBERS = {"sim": "+4915112340001", "http": "+4916012340001", "kannel": "+4917012340001",
           "twilio": "+4917612340001"}  # fmt: skip
BAD_TOKEN = "A" * 22


@dataclass
class Gate:
    """Takes the carriers' receipt requests while closed (200 at once) and forwards them when
    opened; open, it forwards each as it comes."""

    api_url: str = ""
    closed: bool = True
    held: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def take(request: Request) -> Response:
            skip = ("host", "content-length")
            headers = {k: v for k, v in request.headers.items() if k not in skip}
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            item = (request.method, target, headers, await request.body())
            with self.lock:
                if self.closed:
                    self.held.append(item)
                    return PlainTextResponse("OK")
            async with httpx.AsyncClient(base_url=self.api_url, timeout=10) as client:
                method, target, headers, body = item
                answer = await client.request(method, target, headers=headers, content=body)
            return Response(answer.content, answer.status_code)

        return Starlette(routes=[Route("/carriers/{name}/dlr", take, methods=["GET", "POST"])])

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def holds_for(self, name: str) -> int:
        with self.lock:
            return sum(
                1 for _, target, _, _ in self.held if target.startswith(f"/carriers/{name}/")
            )

    def open(self) -> list[int]:
        """Forward what was held to the API, in order, and what comes from now on; their
        answers."""
        with self.lock:
            held, self.held, self.closed = self.held, [], False
        with httpx.Client(base_url=self.api_url, timeout=10) as client:
            return [
                client.request(method, target, headers=headers, content=body).status_code
                for method, target, headers, body in held
            ]


@dataclass
class HttpCarrier:
    """A generic JSON carrier: `POST /sms/send` answers an id, a receipt follows to `dlr-url`."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> Starlette:
        async def send(request: Request) -> JSONResponse:
            body = orjson.loads(await request.body())
            carrier_id = f"h-{uuid.uuid4().hex}"
            task = asyncio.create_task(self._report(body["dlr-url"], carrier_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return JSONResponse({"id": carrier_id, "status": "queued"}, 202)

        return Starlette(routes=[Route("/sms/send", send, methods=["POST"])])

    async def _report(self, url: str, carrier_id: str) -> None:
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient(timeout=5) as client:
            await client.post(url, json={"id": carrier_id, "status": "delivered"})


@dataclass
class World:
    stack: CarrierStack
    gate: Gate
    kannel: bool


@pytest.fixture(scope="module")
def world(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    gate, http_carrier, twilio = Gate(), HttpCarrier(), FakeTwilio()
    directory = Path(tmp_path_factory.mktemp("forged"))
    # From an empty Redis: what earlier modules left on the session's (jobs due later, receipts
    # retried, keys that expire) would change smsq's keys while a test compares them.
    with Redis.from_url(redis_server_url) as client:
        client.flushdb()
    sim = SimulatorConfig(receipt_delay=0.05, receipt_secret=RECEIPT_SECRET)
    with ExitStack() as stack:
        gate_url = stack.enter_context(serve_app(gate.app()))
        sim_url = stack.enter_context(serve_app(create_simulator_app(sim)))
        http_url = stack.enter_context(serve_app(http_carrier.app()))
        twilio_url = stack.enter_context(serve_app(twilio.app()))
        kannel = None if KANNEL_MISSING else stack.enter_context(running_kannel(directory))
        carriers = f"""
[carriers.sim]
type = "sim"
url = "{sim_url}"
receipt_secret = "{RECEIPT_SECRET}"
[carriers.http]
type = "http"
url = "{http_url}"
[carriers.twilio]
type = "twilio"
url = "{twilio_url}"
username = "{ACCOUNT_SID}"
password = "{AUTH_TOKEN}"
"""
        routes = [("sim", "+49151"), ("http", "+49160"), ("twilio", "+49176")]
        if kannel is not None:
            carriers += f"""[carriers.kannel]
type = "kannel"
url = "{kannel.url}"
username = "{USERNAME}"
password = "{PASSWORD}"
"""
            routes.append(("kannel", "+49170"))
        for name, prefix in routes:
            carriers += f'[[routes]]\nprefixes = ["{prefix}"]\ncarriers = ["{name}"]\n'
        path = directory / "carriers.toml"
        path.write_text(carriers)
        env = {"SMSQ_CARRIERS_FILE": str(path), "SMSQ_PUBLIC_URL": gate_url}
        running = stack.enter_context(carrier_stack(redis_server_url, env))
        gate.api_url = running.api_url
        yield World(running, gate, kannel is not None)


def token(ref: str) -> str:
    key = receipt_key(SECRET_KEY)
    assert key is not None
    return segment_token(key, ref)


def signed(body: bytes, secret: str) -> dict[str, str]:
    return {"content-type": "application/json",
            **signature_headers([secret], "msg_forged", int(time.time()), body)}  # fmt: skip


# Forged requests per carrier type: (method, path and query, headers, body, expected status),
# built from the message id and the carrier id of the segment under attack.
Forgery = tuple[str, str, dict[str, str], bytes, int]
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def sim_forgeries(message_id: str, carrier_id: str) -> list[Forgery]:
    one = orjson.dumps({"carrier_id": carrier_id, "status": "UNDELIV", "err": "001"})
    flood = orjson.dumps([{"carrier_id": f"sim-{i}", "status": "DELIVRD"} for i in range(5_000)])
    many = orjson.dumps([orjson.loads(one)] * 1_001)
    ref = f"{message_id}:1"
    return [
        ("POST", "/carriers/sim/dlr", JSON, one, 403),  # no token, no signature
        ("POST", f"/carriers/sim/dlr?ref={ref}", JSON, one, 403),
        ("POST", f"/carriers/sim/dlr?ref={ref}&token={BAD_TOKEN}", JSON, one, 403),
        ("POST", "/carriers/sim/dlr", signed(one, generate_secret()), one, 403),
        ("POST", "/carriers/sim/dlr", {**JSON, "webhook-signature": "v1,AAAA"}, one, 403),
        ("POST", "/carriers/sim/dlr", JSON, flood, 403),  # the report's 5,000 unknown ids
        ("POST", "/carriers/sim/dlr", signed(many, RECEIPT_SECRET), many, 413),
        ("POST", "/carriers/nope/dlr", JSON, one, 404),
        # A valid token of another segment: in at the door, refused when applied.
        ("POST", f"/carriers/sim/dlr?ref=other:1&token={token('other:1')}", JSON, one, 200),
    ]


def http_forgeries(message_id: str, carrier_id: str) -> list[Forgery]:
    one = orjson.dumps({"id": carrier_id, "status": "undelivered"})
    ref = f"{message_id}:1"
    return [
        ("POST", "/carriers/http/dlr", JSON, one, 403),
        ("GET", f"/carriers/http/dlr?id={carrier_id}&status=undelivered", {}, b"", 403),
        ("POST", f"/carriers/http/dlr?ref={ref}&token={BAD_TOKEN}", JSON, one, 403),
        ("POST", "/carriers/http/dlr", signed(one, generate_secret()), one, 403),
    ]


def kannel_forgeries(message_id: str, carrier_id: str) -> list[Forgery]:
    report = f"id={carrier_id}&type=2&answer=id:x%20stat:UNDELIV"  # the report's attack
    ref = f"{message_id}:1"
    return [
        ("GET", f"/carriers/kannel/dlr?{report}", {}, b"", 403),
        ("GET", f"/carriers/kannel/dlr?id={carrier_id}&type=1", {}, b"", 403),
        ("GET", f"/carriers/kannel/dlr?ref={ref}&token={BAD_TOKEN}&{report}", {}, b"", 403),
        ("GET", f"/carriers/kannel/dlr?ref=x:1&token={token('x:1')}&{report}", {}, b"", 403),
    ]


def twilio_forgeries(message_id: str, carrier_id: str) -> list[Forgery]:
    params = {"MessageSid": carrier_id, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    body = "&".join(f"{k}={v}" for k, v in params.items()).encode()
    path = f"/carriers/twilio/dlr?ref={message_id}:1&token={token(f'{message_id}:1')}"
    wrong = {**FORM, "x-twilio-signature": twilio_signature("http://x" + path, params, "nope")}
    return [
        ("POST", "/carriers/twilio/dlr", FORM, body, 403),
        ("POST", path, FORM, body, 403),  # the segment's own token, but unsigned
        ("POST", path, wrong, body, 403),
    ]


FORGERIES: dict[str, Callable[[str, str], list[Forgery]]] = {
    "sim": sim_forgeries, "http": http_forgeries, "kannel": kannel_forgeries,
    "twilio": twilio_forgeries,
}  # fmt: skip


# smsq keys that change by themselves while the system runs: the leases its scheduler and
# batch watcher renew (and take over when an earlier stack's lapses), and the inbox's entry
# counter, which only ever counts up.
RUNNING = {SCHEDULER_LOCK_KEY, BATCH_WATCH_LOCK_KEY, INBOX_SEQ_KEY}


def snapshot(world: World, message_id: str) -> dict[str, Any]:
    """smsq's keys in Redis (but those in `RUNNING`; the broker's keys are Celery's and
    kombu's bookkeeping, which changes as the worker consumes) and the message as the API and
    the store show it."""
    redis = world.stack.redis
    return {
        "keys": sorted(set(redis.scan_iter(f"{PREFIX}*", count=1000)) - RUNNING),
        "message": world.stack.message(message_id),
        "hash": redis.hgetall(f"smsq:msg:{message_id}"),
        "segments": redis.hgetall(f"smsq:msg:{message_id}:seg"),
        "events": redis.lrange(f"smsq:msg:{message_id}:events", 0, -1),
    }


def refusals(carrier: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "smsq_carrier_receipts_refused":
            total += sum(
                s.value for s in metric.samples
                if s.name.endswith("_total") and s.labels["carrier"] in (carrier, "-")
            )  # fmt: skip
    return total


@pytest.mark.parametrize("carrier", ["sim", "http", "kannel", "twilio"])
def test_forged_receipts_change_nothing_and_leave_no_keys(world: World, carrier: str) -> None:
    if carrier == "kannel" and not world.kannel:
        pytest.skip(KANNEL_MISSING or "")
    stack, gate = world.stack, world.gate
    gate.close()
    message_id = stack.send({"to": NUMBERS[carrier], "from": "smsq", "content": "Code 4711"})
    # Kannel's 202 leaves the segment `sent` until the SMSC's ack, which the gate holds too.
    taken = "sent" if carrier == "kannel" else "accepted"
    wait_for(
        lambda: stack.message(message_id)["segments"][0]["status"] == taken, 30,
        f"the carrier never took the message ({taken})",
    )  # fmt: skip
    message = stack.message(message_id)
    carrier_id = message["segments"][0]["carrier_id"]
    assert message["segments"][0]["carrier"] == carrier
    wait_for(lambda: gate.holds_for(carrier), 30, "the genuine receipt never came")
    before = snapshot(world, message_id)
    refused_before = refusals(carrier)

    forgeries = FORGERIES[carrier](message_id, carrier_id)
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        answers = [
            client.request(method, target, headers=headers, content=body).status_code
            for method, target, headers, body, _ in forgeries
        ]
    assert answers == [expected for *_, expected in forgeries]
    assert refusals(carrier) - refused_before == sum(1 for a in answers if a != 200)
    redis = stack.redis  # the one request let in applied, its task acknowledged
    wait_for(
        lambda: redis.hlen(INBOX_KEY) == 0 and redis.hlen("unacked") == 0,
        30,
        "an inbound request was not applied",
    )
    assert snapshot(world, message_id) == before

    assert all(status == 200 for status in gate.open())
    (delivered,) = stack.wait_all([message_id], {"delivered"}, timeout=30)
    assert delivered["segments"][0]["error"] is None
