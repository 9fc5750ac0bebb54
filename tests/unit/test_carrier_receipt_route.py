"""`/carriers/{name}/dlr`: a genuine carrier receipt is kept in the inbox with its task (one
transaction), so a task lost between BRPOP and its delivery being recorded is queued again; a
refused one (unknown carrier, no or a bad token or signature, too many receipts, too fast)
leaves nothing in Redis and is counted."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from producer.api import create_app
from producer.services import Services
from tests.unit.fake_services import fake_services
from worker.carriers.twilio import signature as twilio_signature
from worker.contract import DRAIN_CARRIER_RECEIPTS
from worker.receipts.tokens import receipt_key, segment_token
from worker.settings import Settings
from worker.store.keys import INBOX_KEY, INBOX_WATCH_KEY
from worker.webhooks import generate_secret, signature_headers

SERVER_KEY = "route-test-server-key"
SECRET = generate_secret()
RECEIPT = {"carrier_id": "c-1", "status": "DELIVRD"}


def token(ref: str) -> str:
    key = receipt_key(SERVER_KEY)
    assert key is not None
    return segment_token(key, ref)


def refused(carrier: str, reason: str) -> float:
    labels = {"carrier": carrier, "reason": reason}
    return REGISTRY.get_sample_value("smsq_carrier_receipts_refused_total", labels) or 0.0


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "max_body_bytes": 65_536, "secret_key": SERVER_KEY, "carrier_receipt_secret": SECRET,
        "carrier_receipts_max": 5, "public_url": "http://testserver",
    }  # fmt: skip
    return Settings.model_validate({**values, **overrides})


@pytest.fixture
def services() -> Services:
    return fake_services(settings(), direct=True)


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as client:
        yield client


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    headers = signature_headers([secret], "msg_1", int(time.time()), body)
    return {"content-type": "application/json", **headers}


def test_a_carrier_receipt_is_kept_in_the_inbox_until_applied(
    api: TestClient, services: Services
) -> None:
    """The request is in the inbox and on the watch list, and a drain of the inbox is started
    (one task, whatever number of requests come while it runs)."""
    url = f"/carriers/sim/dlr?ref=m1:1&token={token('m1:1')}"
    reply = api.post(url, json=RECEIPT)
    assert reply.status_code == 200
    entries = cast(dict[str, str], services.redis.hgetall(INBOX_KEY))
    assert len(entries) == 1
    entry, kept = next(iter(entries.items()))
    carrier, request = orjson.loads(kept)
    assert carrier == "sim"
    assert orjson.loads(base64.b64decode(request["body"])) == RECEIPT
    assert request["query"] == {"ref": "m1:1", "token": token("m1:1")}
    assert services.redis.zscore(INBOX_WATCH_KEY, entry) is not None
    task = orjson.loads(cast(str, services.redis.lindex("carrier-dlr", 0)))
    assert task["headers"]["task"] == DRAIN_CARRIER_RECEIPTS
    assert api.post(url, json=RECEIPT).status_code == 200
    assert services.redis.hlen(INBOX_KEY) == 2
    assert services.redis.llen("carrier-dlr") == 1  # the planned drain takes both
    services.inbox.done(list(cast(dict[str, str], services.redis.hgetall(INBOX_KEY))))
    assert not services.redis.exists(INBOX_KEY, INBOX_WATCH_KEY)


def test_a_signed_batch_of_many_segments_is_kept(api: TestClient, services: Services) -> None:
    body = orjson.dumps([{**RECEIPT, "carrier_id": f"c-{i}"} for i in range(5)])
    assert api.post("/carriers/sim/dlr", content=body, headers=signed(body)).status_code == 200
    assert services.redis.hlen(INBOX_KEY) == 1


@pytest.mark.parametrize(
    ("url", "headers", "reason", "field"),
    [
        ("/carriers/sim/dlr", {}, "missing_token", "token"),
        ("/carriers/sim/dlr?ref=m1:1", {}, "missing_token", "token"),
        ("/carriers/sim/dlr?ref=m1:1&token=AAAAAAAAAAAAAAAAAAAAAA", {}, "bad_token", "token"),
        (f"/carriers/sim/dlr?ref=m1:2&token={token('m1:1')}", {}, "bad_token", "token"),
        ("/carriers/sim/dlr", {"webhook-signature": "v1,AAAA"}, "bad_signature", "signature"),
    ],
)
def test_an_unauthenticated_receipt_is_403_keeps_nothing_and_is_counted(
    api: TestClient,
    services: Services,
    url: str,
    headers: dict[str, str],
    reason: str,
    field: str,
) -> None:
    before = refused("sim", reason)
    reply = api.post(url, json=RECEIPT, headers=headers)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "forbidden"
    assert reply.json()["error"]["field"] == field
    assert services.redis.dbsize() == 0
    assert refused("sim", reason) == before + 1


def test_a_batch_signed_with_another_secret_is_refused(api: TestClient, services: Services) -> None:
    body = orjson.dumps([RECEIPT])
    reply = api.post("/carriers/sim/dlr", content=body, headers=signed(body, generate_secret()))
    assert reply.status_code == 403
    assert services.redis.dbsize() == 0


@pytest.mark.parametrize("name", ["kannel", "twilio", "http", "nope"])
def test_a_carrier_not_configured_here_is_404(
    api: TestClient, services: Services, name: str
) -> None:
    """Only `SMSQ_CARRIER` (here `sim`) is configured: the other built-in names are 404 too."""
    before = refused("-", "unknown_carrier")
    reply = api.get(f"/carriers/{name}/dlr?id=m1.1&type=2&answer=id:x%20stat:UNDELIV")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert services.redis.dbsize() == 0
    assert refused("-", "unknown_carrier") == before + 1


def test_the_carriers_of_a_carriers_file_and_only_those(tmp_path: Path) -> None:
    path = tmp_path / "carriers.toml"
    path.write_text(
        '[carriers.kannel-eu]\ntype = "kannel"\nurl = "http://k.test"\n'
        '[[routes]]\ncarriers = ["kannel-eu"]\n'
    )
    services = fake_services(settings(carriers_file=str(path)), direct=True)
    with TestClient(create_app(services=services)) as api:
        url = f"/carriers/kannel-eu/dlr?ref=m1:1&token={token('m1:1')}&id=m1.1&type=1"
        assert api.get(url).status_code == 200
        assert api.get("/carriers/sim/dlr").status_code == 404
        assert api.get("/carriers/kannel/dlr").status_code == 404


def test_more_receipts_than_allowed_is_413_and_keeps_nothing(
    api: TestClient, services: Services
) -> None:
    before = refused("sim", "too_many_receipts")
    body = orjson.dumps([RECEIPT] * 6)
    reply = api.post("/carriers/sim/dlr", content=body, headers=signed(body))
    assert reply.status_code == 413
    assert reply.json()["error"]["field"] == "body"
    assert services.redis.dbsize() == 0
    assert refused("sim", "too_many_receipts") == before + 1


def test_too_many_requests_from_one_address_is_429_with_retry_after() -> None:
    services = fake_services(
        settings(carrier_receipts_rate=0.5, carrier_receipts_burst=2), direct=True
    )
    before = refused("sim", "rate_limited")
    with TestClient(create_app(services=services)) as api:
        url = f"/carriers/sim/dlr?ref=m1:1&token={token('m1:1')}"
        assert [api.post(url, json=RECEIPT).status_code for _ in range(2)] == [200, 200]
        keys = services.redis.dbsize()
        reply = api.post(url, json=RECEIPT)
        assert reply.status_code == 429
        assert int(reply.headers["retry-after"]) >= 1
        assert services.redis.dbsize() == keys
        assert services.redis.hlen(INBOX_KEY) == 2
    assert refused("sim", "rate_limited") == before + 1


class TestKannelAndTwilio:
    def test_the_issue_s_forged_kannel_receipt_is_refused(self) -> None:
        """No token (the attack of the report), or a token with another segment's id."""
        services = fake_services(settings(carrier="kannel", carrier_receipt_secret=""))
        with TestClient(create_app(services=services)) as api:
            forged = "/carriers/kannel/dlr?id=m1.1&type=2&answer=id:x%20stat:UNDELIV"
            assert api.get(forged).status_code == 403
            other = f"/carriers/kannel/dlr?ref=m2:1&token={token('m2:1')}&id=m1.1&type=2"
            reply = api.get(other)
            assert (reply.status_code, reply.json()["error"]["field"]) == (403, "id")
            assert services.redis.dbsize() == 0
            genuine = f"/carriers/kannel/dlr?ref=m1:1&token={token('m1:1')}&id=m1.1&type=1"
            assert api.get(genuine).status_code == 200

    def test_a_twilio_callback_needs_its_signature(self) -> None:
        services = fake_services(
            settings(carrier="twilio", carrier_receipt_secret="", carrier_password="t" * 32)
        )
        form = {"MessageSid": "SM1", "MessageStatus": "undelivered"}
        url = f"http://testserver/carriers/twilio/dlr?ref=m1:1&token={token('m1:1')}"
        form_type = {"content-type": "application/x-www-form-urlencoded"}
        with TestClient(create_app(services=services)) as api:
            forged = {**form_type, "x-twilio-signature": twilio_signature(url, form, "x" * 32)}
            assert api.post(url, data=form, headers=forged).status_code == 403
            assert services.redis.dbsize() == 0
            good = {**form_type, "x-twilio-signature": twilio_signature(url, form, "t" * 32)}
            assert api.post(url, data=form, headers=good).status_code == 200
