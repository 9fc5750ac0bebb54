"""Inbound messages and opt-outs against the real system: an API process, a Celery worker
process, the scheduler, the session's Redis, the carrier simulator sending MOs (`POST /mo`,
signed as its receipts are) and a receiver standing in for the owner's mo-url.

- an MO reaches the owner's mo-url, signed and verifiable with `standardwebhooks`;
- a STOP makes the next send to that number a 422 `opted_out` (a batch reports it per
  recipient, the library raises the same error), and START lifts it;
- a multipart MO whose parts come last part first is delivered whole;
- an unauthenticated MO changes nothing;
- a real Kannel's sms-service, configured as docs/inbound.md says, delivers handsets' replies
  (GSM and UCS-2 text) to `/carriers/kannel/mo` (skipped where Kannel is not installed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote_from_bytes

import httpx
import pytest
import redis
from standardwebhooks.webhooks import Webhook

from producer.library import Producer
from tests.integration.api_process import api_process
from tests.integration.kannel import KANNEL_MISSING, running_kannel
from tests.integration.stack import (
    RECEIPT_SECRET,
    SECRET_KEY,
    run_scheduler,
    stop_process,
    wait_for,
    worker_process,
)
from tests.receiver import Received, Receiver
from tests.servers import serve_app
from worker.errors import OptedOutError
from worker.keys import CreatedKey, KeyStore
from worker.mo.owners import Owners
from worker.receipts.tokens import mo_url
from worker.settings import Settings
from worker.simulator import SimulatorConfig, create_simulator_app
from worker.store.keys import MO_WATCH_KEY
from worker.store.mo import MoStore

pytestmark = pytest.mark.integration

OURS = "+4930123456"  # the number the tenant owns
CARRIERS = """
[carriers.sim]
type = "sim"
url = "{sim_url}"
receipt_secret = "{secret}"

[carriers.kannel]                   # takes no messages here: its sms-service sends MOs
type = "kannel"
url = "http://127.0.0.1:9"

[[routes]]
carriers = ["sim"]
"""
LONG = "Thanks, got it. Could you move my appointment to Thursday afternoon? " * 5


@dataclass
class System:
    api_url: str
    sim_url: str
    receiver: Receiver
    receiver_url: str
    redis: redis.Redis
    key: CreatedKey
    http: httpx.Client
    settings: Settings

    def mo(self, sender: str, text: str, **extra: Any) -> list[dict[str, Any]]:
        """Have the simulator send an MO to smsq; smsq's answers."""
        body = {"from": sender, "to": OURS, "text": text,
                "url": f"{self.api_url}/carriers/sim/mo", **extra}  # fmt: skip
        reply = httpx.post(f"{self.sim_url}/mo", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        answers: list[dict[str, Any]] = reply.json()["answers"]
        return answers

    def webhooks(self, count: int) -> list[Received]:
        return [r for r in self.receiver.wait_for(count) if r.path == "/mo"]

    def send(self, to: str) -> httpx.Response:
        return self.http.post(f"{self.api_url}/sms/send", json={"to": to, "content": "hi"})


@pytest.fixture(scope="module")
def system(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    client.flushdb()
    receiver = Receiver()
    with ExitStack() as stack:
        stack.callback(client.close)
        sim = SimulatorConfig(receipt_delay=0.05, receipt_secret=RECEIPT_SECRET)
        sim_url = stack.enter_context(serve_app(create_simulator_app(sim)))
        receiver_url = stack.enter_context(serve_app(receiver.app()))
        carriers = tmp_path_factory.mktemp("inbound") / "carriers.toml"
        carriers.write_text(CARRIERS.format(sim_url=sim_url, secret=RECEIPT_SECRET))
        env = {
            "SMSQ_REDIS_URL": redis_server_url,
            "SMSQ_CARRIERS_FILE": str(carriers),
            "SMSQ_SECRET_KEY": SECRET_KEY,
            "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_WORKER_CONCURRENCY": "8",
        }
        api_url = stack.enter_context(api_process(env))
        worker = worker_process({**env, "SMSQ_PUBLIC_URL": api_url}, concurrency=8, name="mo")
        stack.callback(stop_process, worker)
        settings = Settings(redis_url=redis_server_url, carrier_url=sim_url,
                            secret_key=SECRET_KEY, dlr_allow_private=["127.0.0.0/8"])  # fmt: skip
        stack.enter_context(run_scheduler(redis_server_url, settings))
        key = KeyStore(client).create("inbound", mo_url=f"{receiver_url}/mo")
        Owners(client).assign(key.key.id, OURS)
        http = httpx.Client(headers={"authorization": f"Bearer {key.api_key}"}, timeout=10)
        stack.callback(http.close)
        yield System(api_url, sim_url, receiver, receiver_url, client, key, http, settings)


def test_an_mo_reaches_the_owners_mo_url_signed(system: System) -> None:
    """The webhook verifies with the key's secret and says the MO; `GET /mo` lists it."""
    (answer,) = system.mo("+4915112340001", "Is it still on for 3pm?")
    assert answer["status"] == 200, answer
    (mo_id,) = answer["body"]["ids"]
    (hook,) = [r for r in system.webhooks(1) if r.json()["id"] == mo_id]
    body = Webhook(system.key.webhook_secret).verify(hook.body, hook.headers)
    assert (body["type"], body["from"], body["to"]) == ("mo", "+4915112340001", OURS)
    assert (body["text"], body["carrier"], body["keyword"]) == ("Is it still on for 3pm?",
                                                                 "sim", None)  # fmt: skip
    assert hook.headers["webhook-id"] == f"evt_mo_{mo_id}"
    listed = system.http.get(f"{system.api_url}/mo", params={"to": OURS}).json()["mo"]
    assert mo_id in [m["id"] for m in listed]
    delivered = wait_for(
        lambda: next((m for m in system.http.get(f"{system.api_url}/mo").json()["mo"]
                      if m["id"] == mo_id and m["delivery"]["state"] == "sent"), None),
        10, "the MO's webhook is never recorded as sent",
    )  # fmt: skip
    assert delivered["delivery"]["attempts"] == 1


def test_stop_refuses_the_next_send_and_start_lifts_it(system: System) -> None:
    """After STOP: 422 `opted_out` naming `to`, a batch rejects that recipient only, the
    library raises OptedOutError; after START the send is accepted again."""
    handset = "+4915112340002"
    assert system.send(handset).status_code == 202
    system.mo(handset, "STOP")
    refused = system.send(handset)
    assert refused.status_code == 422
    assert (refused.json()["error"]["code"], refused.json()["error"]["field"]) == (
        "opted_out", "to",
    )  # fmt: skip
    batch = system.http.post(
        f"{system.api_url}/sms/batch",
        json={"content": "news", "recipients": ["+4915112340003", handset]},
    ).json()
    assert batch["accepted"] == 1
    assert [(r["index"], r["error"]["code"]) for r in batch["rejected"]] == [(1, "opted_out")]
    with Producer(settings=system.settings, api_key=system.key.api_key) as library, \
            pytest.raises(OptedOutError):  # fmt: skip
        library.send(handset, "hi")
    system.mo(handset, "start")
    assert system.send(handset).status_code == 202


def test_a_multipart_mo_is_reassembled(system: System) -> None:
    """Parts sent last first (16-bit reference) make one MO, delivered whole."""
    answers = system.mo("+4915112340004", LONG, split=True, order="reverse", reference_bits=16)
    assert len(answers) == 3
    assert [a["body"]["ids"] for a in answers[:-1]] == [[None], [None]]
    (mo_id,) = answers[-1]["body"]["ids"]
    hook = wait_for(
        lambda: next((r for r in system.receiver.snapshot()
                      if r.path == "/mo" and r.json()["id"] == mo_id), None),
        30, "the multipart MO's webhook never came",
    )  # fmt: skip
    assert (hook.json()["text"], hook.json()["parts"], hook.json()["missing_parts"]) == (
        LONG, 3, [],
    )  # fmt: skip


def test_an_unauthenticated_mo_changes_nothing(system: System) -> None:
    """An unsigned STOP straight to smsq is 403: no MO, no opt-out, no webhook."""
    handset = "+4915112340005"
    before = inbound_state(system.redis)
    webhooks = len(system.receiver.snapshot())
    reply = httpx.post(f"{system.api_url}/carriers/sim/mo",
                       json={"from": handset, "to": OURS, "text": "STOP"})  # fmt: skip
    assert reply.status_code == 403
    assert inbound_state(system.redis) == before
    assert system.send(handset).status_code == 202
    assert len(system.receiver.snapshot()) == webhooks


def inbound_state(client: redis.Redis) -> tuple[list[str], list[str], dict[str, str]]:
    """Every MO and opt-out key, the opt-out lists' members and the MO counters (the rest of
    Redis moves on its own: earlier tests' messages, the scheduler; so does the list of MO
    webhooks in flight, which an earlier test's leaves once its webhook is recorded)."""
    keys = sorted(cast(list[str], client.keys("smsq:mo*")) + cast(list[str], client.keys(
        "smsq:optout*")))  # fmt: skip
    keys = [key for key in keys if key != MO_WATCH_KEY]
    members = sorted(m for k in keys if k.startswith("smsq:optout")
                     for m in cast(list[str], client.zrange(k, 0, -1)))  # fmt: skip
    counters = cast(dict[str, str], client.hgetall("smsq:counters"))
    return keys, members, {k: v for k, v in counters.items() if k.startswith("mo_")}


@pytest.mark.skipif(KANNEL_MISSING is not None, reason=KANNEL_MISSING or "")
def test_kannels_sms_service_delivers_replies(system: System, tmp_path: Path) -> None:
    """smsbox fetches the documented get-url (`smsq carriers mo-url kannel` + parameters) for
    each reply; GSM text and UCS-2 (an emoji's surrogate pair) arrive intact, a STOP opts the
    number out."""
    handset = "+4915112340006"
    url = mo_url(system.api_url, "kannel", system.settings)
    store = MoStore(system.redis)
    with running_kannel(tmp_path, mo_url=url) as kannel:
        kannel.send_mo(handset[1:], OURS[1:], "data", quote_from_bytes("Café at 5?".encode()))
        ucs2 = quote_from_bytes("Да 👍".encode("utf-16-be"), safe="")
        kannel.send_mo(handset[1:], OURS[1:], "ucs2", ucs2)
        kannel.send_mo(handset[1:], OURS[1:], "data", "Stop")

        def texts() -> list[str]:
            records = store.page(system.key.key.id, to=OURS, limit=1000)[0]
            return [r.text for r in records if r.sender == handset and r.carrier == "kannel"]

        wait_for(lambda: len(texts()) == 3, 20, "Kannel's replies never all arrived")
    assert sorted(texts()) == sorted(["Café at 5?", "Да 👍", "Stop"])
    assert system.send(handset).json()["error"]["code"] == "opted_out"
