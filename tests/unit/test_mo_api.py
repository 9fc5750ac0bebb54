"""The API's side of inbound messages: `/carriers/{name}/mo` authenticates before it stores
anything, `GET /mo` lists a key's MOs, and every send path refuses numbers that opted out
(`POST /sms/send`, `/sms/batch`, `/otp/send`, the Python library) — on fakeredis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from producer.api import create_app
from producer.services import Services
from tests.unit.fake_services import fake_services
from worker.carriers.twilio import signature as twilio_signature
from worker.keys import OTP_OPTOUT_EXEMPT, CreatedKey
from worker.mo.owners import Owners
from worker.optouts import DEPLOYMENT
from worker.receipts.tokens import mo_token, mo_url, receipt_key
from worker.settings import Settings
from worker.store.mo import MoStore
from worker.webhooks import generate_secret, signature_headers

SERVER_KEY = "mo-test-server-key"
SECRET = generate_secret()
TWILIO_TOKEN = "twilio-auth-token"
HANDSET = "+4915112340001"
OURS = "+4930123456"
CARRIERS = f"""
[carriers.sim]
type = "sim"
url = "http://sim.test"
receipt_secret = "{SECRET}"

[carriers.kannel]
type = "kannel"
url = "http://kannel.test:13013"

[carriers.twilio]
type = "twilio"
url = "https://api.twilio.test"
username = "AC{"0" * 32}"
password = "{TWILIO_TOKEN}"

[[routes]]
carriers = ["sim"]
"""


def token(name: str) -> str:
    key = receipt_key(SERVER_KEY)
    assert key is not None
    return mo_token(key, name)


@pytest.fixture
def services(tmp_path: Path) -> Services:
    carriers = tmp_path / "carriers.toml"
    carriers.write_text(CARRIERS)
    settings = Settings(
        secret_key=SERVER_KEY, public_url="http://testserver", carriers_file=str(carriers),
        dlr_allow_private=["127.0.0.0/8"], otp_cooldown_seconds=0,
    )  # fmt: skip
    return fake_services(settings, direct=True)


@pytest.fixture
def key(services: Services) -> CreatedKey:
    created = services.keys.create("tenant")
    Owners(services.redis).assign(created.key.id, OURS, "https://client.test/mo")
    return created


@pytest.fixture
def api(services: Services, key: CreatedKey) -> Iterator[TestClient]:
    headers = {"authorization": f"Bearer {key.api_key}"}
    with TestClient(create_app(services=services), headers=headers) as client:
        yield client


def signed(body: bytes) -> dict[str, str]:
    return {"content-type": "application/json",
            **signature_headers([SECRET], "msg_1", int(time.time()), body)}  # fmt: skip


def mo_ids(services: Services, owner: str) -> list[str]:
    return [r.id for r in MoStore(services.redis).page(owner)[0]]


def refusals(carrier: str, reason: str) -> float:
    labels = {"carrier": carrier, "reason": reason}
    return REGISTRY.get_sample_value("smsq_carrier_mo_refused_total", labels) or 0.0


class TestIntake:
    def test_a_signed_json_mo_is_stored_and_queued(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        body = orjson.dumps({"from": HANDSET, "to": OURS, "text": "hello", "id": "sim-1"})
        reply = api.post("/carriers/sim/mo", content=body, headers=signed(body))
        assert reply.status_code == 200, reply.text
        (mo_id,) = reply.json()["ids"]
        assert mo_ids(services, key.key.id) == [mo_id]

    def test_kannels_get_with_its_token_answers_an_empty_body(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        """An empty 200: smsbox then sends the handset no reply."""
        query = urlencode({"token": token("kannel"), "from": HANDSET, "to": OURS,
                           "text": "hello", "coding": "0"})  # fmt: skip
        reply = api.get(f"/carriers/kannel/mo?{query}")
        assert (reply.status_code, reply.text) == (200, "")
        assert len(mo_ids(services, key.key.id)) == 1

    def test_twilios_signed_webhook_answers_empty_twiml(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        form = {"From": HANDSET, "To": OURS, "Body": "hello", "MessageSid": "SM1"}
        url = "http://testserver/carriers/twilio/mo"
        headers = {"x-twilio-signature": twilio_signature(url, form, TWILIO_TOKEN)}
        reply = api.post("/carriers/twilio/mo", data=form, headers=headers)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/xml")
        assert "<Response></Response>" in reply.text
        assert len(mo_ids(services, key.key.id)) == 1

    @pytest.mark.parametrize(
        ("carrier", "request_", "reason"),
        [
            ("sim", {"json": {"from": HANDSET, "to": OURS, "text": "STOP"}}, "missing_token"),
            ("sim", {"url": "?token=AAAAAAAAAAAAAAAAAAAAAA",
                     "json": {"from": HANDSET, "to": OURS, "text": "STOP"}}, "bad_token"),
            ("kannel", {"url": f"?from={HANDSET[1:]}&to={OURS[1:]}&text=STOP"}, "missing_token"),
            ("twilio", {"data": {"From": HANDSET, "To": OURS, "Body": "STOP"}}, "bad_signature"),
            ("twilio", {"data": {"From": HANDSET, "To": OURS, "Body": "STOP"},
                        "headers": {"x-twilio-signature": "forged"}}, "bad_signature"),
        ],
    )  # fmt: skip
    def test_an_unauthenticated_stop_changes_nothing(
        self, api: TestClient, services: Services, carrier: str, request_: dict[str, Any],
        reason: str,
    ) -> None:  # fmt: skip
        """403 naming what is wrong, counted, and Redis exactly as before."""
        before = sorted(cast(list[str], services.redis.keys("*")))
        counted = refusals(carrier, reason)
        options = dict(request_)
        url = f"/carriers/{carrier}/mo" + options.pop("url", "")
        reply = api.post(url, **options)
        assert reply.status_code == 403
        assert reply.json()["error"]["code"] == "forbidden"
        assert sorted(cast(list[str], services.redis.keys("*"))) == before
        assert refusals(carrier, reason) == counted + 1

    def test_a_forged_signature_is_refused_even_with_a_token(self, api: TestClient) -> None:
        body = orjson.dumps({"from": HANDSET, "to": OURS, "text": "STOP"})
        headers = {**signed(body), "webhook-signature": "v1,Zm9yZ2Vk"}
        reply = api.post(f"/carriers/sim/mo?token={token('sim')}", content=body, headers=headers)
        assert reply.status_code == 403

    def test_another_carriers_token_is_refused(self, api: TestClient) -> None:
        query = urlencode({"token": token("sim"), "from": HANDSET, "to": OURS, "text": "x"})
        assert api.get(f"/carriers/kannel/mo?{query}").status_code == 403

    def test_an_unknown_carrier_is_404(self, api: TestClient) -> None:
        assert api.post("/carriers/nope/mo", json={}).status_code == 404

    def test_a_malformed_mo_is_422_naming_the_field(
        self, api: TestClient, services: Services
    ) -> None:
        before = sorted(cast(list[str], services.redis.keys("*")))
        body = orjson.dumps({"to": OURS, "text": "hello"})
        reply = api.post("/carriers/sim/mo", content=body, headers=signed(body))
        assert reply.status_code == 422
        assert reply.json()["error"]["field"] == "from"
        assert sorted(cast(list[str], services.redis.keys("*"))) == before

    def test_the_printed_url_carries_the_token(self, services: Services) -> None:
        url = mo_url("http://smsq.example", "kannel", services.settings)
        assert url == f"http://smsq.example/carriers/kannel/mo?token={token('kannel')}"


class TestListing:
    def store(self, services: Services, text: str, to: str = OURS) -> str:
        mo_id = services.mo_intake.accept("sim", HANDSET, to, text, received_at=int(
            time.time() * 1000))  # fmt: skip
        assert mo_id is not None
        return mo_id

    def test_newest_first_in_pages(self, api: TestClient, services: Services) -> None:
        ids = [self.store(services, f"m{i}") for i in range(5)]
        first = api.get("/mo", params={"limit": 2}).json()
        assert [m["id"] for m in first["mo"]] == ids[::-1][:2]
        assert first["mo"][0]["delivery"] == {"state": "open", "attempts": 0}
        assert first["mo"][0]["from"] == HANDSET
        seen = [m["id"] for m in first["mo"]]
        cursor = first["next_cursor"]
        while cursor:
            page = api.get("/mo", params={"limit": 2, "cursor": cursor}).json()
            seen += [m["id"] for m in page["mo"]]
            cursor = page["next_cursor"]
        assert seen == ids[::-1]

    def test_filtered_by_number_and_time(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        Owners(services.redis).assign(key.key.id, "+4930999999")
        self.store(services, "a")
        other = self.store(services, "b", to="+4930999999")
        assert [m["id"] for m in api.get("/mo", params={"to": "4930999999"}).json()["mo"]] == [
            other
        ]
        later = api.get("/mo", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert later == {"mo": [], "next_cursor": None}

    def test_other_keys_mos_are_not_listed(
        self, services: Services, api: TestClient
    ) -> None:
        self.store(services, "to the tenant")
        other = services.keys.create("other")
        reply = api.get("/mo", headers={"authorization": f"Bearer {other.api_key}"})
        assert reply.json()["mo"] == []

    @pytest.mark.parametrize(
        ("params", "field"), [({"cursor": "x"}, "cursor"), ({"since": "soon"}, "since")]
    )
    def test_bad_parameters_name_their_field(
        self, api: TestClient, params: dict[str, str], field: str
    ) -> None:
        reply = api.get("/mo", params=params)
        assert reply.status_code == 422
        assert reply.json()["error"]["field"] == field


class TestOptedOut:
    def stop(self, services: Services, key_id: str) -> None:
        services.optouts.add(key_id, HANDSET)

    def test_a_send_to_a_number_that_said_stop_is_422(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        self.stop(services, key.key.id)
        reply = api.post("/sms/send", json={"to": HANDSET[1:], "content": "hi"})
        assert reply.status_code == 422
        assert reply.json()["error"]["code"] == "opted_out"
        assert reply.json()["error"]["field"] == "to"
        assert not services.redis.keys("smsq:msg:*")
        other = api.post("/sms/send", json={"to": "+4915112340002", "content": "hi"})
        assert other.status_code == 202

    def test_a_refused_send_counts_toward_the_keys_rate(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        """Refused in the script that would write it: nothing stored, the call counted (as any
        refused input), so the key's next call within the second is over its rate."""
        self.stop(services, key.key.id)
        services.keys.set_limits(key.key.id, rate=1.0, burst=1)
        services.gate.ttl = 0  # see the new limits at once
        assert api.post("/sms/send", json={"to": HANDSET, "content": "hi"}).status_code == 422
        reply = api.post("/sms/send", json={"to": "+4915112340002", "content": "hi"})
        assert reply.status_code == 429

    def test_an_idempotent_repeat_replays_the_first_answer(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        """A send accepted before the STOP, repeated with its Idempotency-Key, gets its first
        answer (nothing new is sent either way)."""
        headers = {"idempotency-key": "order-17"}
        body = {"to": HANDSET, "content": "hi"}
        first = api.post("/sms/send", json=body, headers=headers)
        self.stop(services, key.key.id)
        again = api.post("/sms/send", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (202, 202)
        assert again.json() == first.json()

    def test_the_deployments_list_refuses_every_key(
        self, api: TestClient, services: Services
    ) -> None:
        services.optouts.add(DEPLOYMENT, HANDSET)
        reply = api.post("/sms/send", json={"to": HANDSET, "content": "hi"})
        assert reply.json()["error"]["code"] == "opted_out"

    def test_a_batch_reports_it_per_recipient(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        self.stop(services, key.key.id)
        recipients = ["+4915112340002", HANDSET, "+4915112340003"]
        reply = api.post("/sms/batch", json={"content": "hi", "recipients": recipients})
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert body["accepted"] == 2
        (rejected,) = body["rejected"]
        assert (rejected["index"], rejected["to"]) == (1, HANDSET)
        assert rejected["error"]["code"] == "opted_out"

    def test_otp_codes_are_refused_unless_the_key_exempts_them(
        self, api: TestClient, services: Services, key: CreatedKey
    ) -> None:
        """Refused by default, as Twilio does; `--otp-optout exempt` lets codes through."""
        self.stop(services, key.key.id)
        refused = api.post("/otp/send", json={"to": HANDSET})
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "opted_out"
        services.keys.set_inbound(key.key.id, otp_optout=OTP_OPTOUT_EXEMPT)
        assert api.post("/otp/send", json={"to": HANDSET}).status_code == 202
        assert api.post("/sms/send", json={"to": HANDSET, "content": "hi"}).status_code == 422
