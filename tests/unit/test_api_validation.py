"""The send API's input handling: every bad input is a 4xx JSON error naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import fakeredis
import pytest
from celery import Celery
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.idempotency import Idempotency
from producer.services import Services
from tests.unit.fake_services import fake_services, keyed_client
from worker.keys import KeyStore
from worker.queueing import CeleryPublisher
from worker.receipts.tokens import receipt_key, segment_token
from worker.settings import Settings
from worker.store import Store

TO = "+14155552671"


@pytest.fixture
def services() -> Services:
    return fake_services(Settings(max_body_bytes=4096))


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    with keyed_client(services) as client:
        yield client


def send(api: TestClient, **body: Any) -> Any:
    return api.post("/sms/send", json={"to": TO, "content": "hi", **body})


class TestAccepted:
    def test_valid_message_is_accepted_and_stored(
        self, api: TestClient, services: Services
    ) -> None:
        """A valid send answers 202 with the contract's fields and stores the message queued."""
        reply = send(api, content="Hello €")
        assert reply.status_code == 202
        body = reply.json()
        assert set(body) == {"id", "status", "to", "encoding", "segments", "characters"}
        assert (body["status"], body["to"], body["encoding"]) == ("queued", TO, "gsm7")
        assert services.store.fields(body["id"])["status"] == "queued"

    def test_number_without_plus_is_normalised(self, api: TestClient) -> None:
        """`to` without the leading + is read as E.164."""
        assert send(api, to="14155552671").json()["to"] == TO

    def test_future_send_at_is_scheduled(self, api: TestClient, services: Services) -> None:
        """A send_at in the future answers `scheduled` and lands in the durable schedule."""
        at = datetime.now(UTC) + timedelta(hours=1)
        reply = send(api, send_at=at.isoformat())
        assert reply.status_code == 202
        assert reply.json()["status"] == "scheduled"
        scheduled = cast(
            list[tuple[str, float]], services.redis.zrange("smsq:schedule", 0, -1, withscores=True)
        )
        ((member, score),) = scheduled
        assert reply.json()["id"] in member
        assert score == int(at.timestamp() * 1000)

    def test_send_at_more_than_a_year_ahead_is_refused(self, api: TestClient) -> None:
        """Schedules are bounded to a year."""
        reply = send(api, send_at="2099-01-01T00:00:00Z")
        assert reply.status_code == 422
        assert reply.json()["error"]["field"] == "send_at"


class TestRejected:
    @pytest.mark.parametrize(
        ("body", "field", "status"),
        [
            ({"to": "12"}, "to", 422),
            ({"to": "+1415555267a"}, "to", 422),
            ({"content": ""}, "content", 422),
            ({"dlr": True}, "dlr-url", 422),
            ({"dlr-level": 4}, "dlr-level", 422),
            ({"dlr-method": "PUT"}, "dlr-method", 422),
            ({"coding": "latin1"}, "coding", 422),
            ({"coding": "GSM7", "content": "çà"}, "content", 422),
            ({"content": "a\x1bb"}, "content", 422),
            ({"from": "ThisIsTooLongSender"}, "from", 422),
            ({"priority": "urgent"}, "priority", 422),
            ({"validity": 0}, "validity", 422),
            ({"max_segments": 1, "content": "x" * 161}, "content", 422),
            ({"client_ref": "r" * 65}, "client_ref", 422),
            ({"unknown": 1}, "unknown", 422),
            ({"send_at": "tomorrow"}, "send_at", 422),
            ({"dlr": True, "dlr-url": "http://169.254.169.254/latest"}, "dlr-url", 422),
            ({"dlr": True, "dlr-url": "ftp://example.com/r"}, "dlr-url", 422),
        ],
    )
    def test_invalid_field_is_named(
        self, api: TestClient, body: dict[str, Any], field: str, status: int
    ) -> None:
        """Each invalid input answers 422 naming the offending field."""
        reply = send(api, **body)
        assert reply.status_code == status, reply.text
        assert reply.json()["error"]["field"] == field

    def test_forced_gsm7_names_the_characters(self, api: TestClient) -> None:
        """Forcing GSM-7 on text that does not fit names the characters, never a silent '?'."""
        reply = send(api, coding="GSM7", content="naïve ç")
        message = reply.json()["error"]["message"]
        assert "ç" in message
        assert "ï" in message

    def test_malformed_json_says_where(self, api: TestClient) -> None:
        """Broken JSON answers 400 with the line and column."""
        reply = api.post(
            "/sms/send",
            content=b'{"to": "+14155552671",\n "content": }',
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["code"] == "malformed_json"
        assert "line 2 column" in error["message"]

    def test_body_that_is_not_an_object_is_422(self, api: TestClient) -> None:
        """A JSON array is not a message."""
        assert api.post("/sms/send", json=[1, 2]).status_code == 422

    def test_oversized_body_is_413(self, api: TestClient) -> None:
        """A body over the configured limit answers 413."""
        assert send(api, content="x" * 5000).status_code == 413

    def test_missing_key_is_401(self, services: Services) -> None:
        """No bearer key: 401 with WWW-Authenticate."""
        with TestClient(create_app(services=services)) as client:
            reply = client.post("/sms/send", json={"to": TO, "content": "hi"})
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"] == "Bearer"

    def test_revoked_key_is_401(self, services: Services) -> None:
        """A revoked key is refused."""
        created = services.keys.create("gone")
        services.keys.revoke(created.key.id)
        with TestClient(create_app(services=services)) as client:
            reply = client.post(
                "/sms/send", json={"to": TO, "content": "hi"},
                headers={"authorization": f"Bearer {created.api_key}"},
            )  # fmt: skip
        assert reply.status_code == 401


class TestIdempotency:
    def test_same_key_and_body_replays_the_first_reply(
        self, api: TestClient, services: Services
    ) -> None:
        """The same Idempotency-Key and body replays the first reply and stores nothing."""
        assert send(api, content="without a key").status_code == 202
        body = {"to": TO, "content": "idem"}
        one = api.post("/sms/send", json=body, headers={"Idempotency-Key": "k1"})
        two = api.post("/sms/send", json=body, headers={"Idempotency-Key": "k1"})
        assert one.status_code == two.status_code == 202
        assert one.json() == two.json()
        assert len(services.redis.keys("smsq:msg:*:events")) == 2

    def test_same_key_other_body_is_409(self, api: TestClient) -> None:
        """Reusing an Idempotency-Key with another body is a conflict."""
        api.post("/sms/send", json={"to": TO, "content": "a"}, headers={"Idempotency-Key": "k2"})
        reply = api.post(
            "/sms/send", json={"to": TO, "content": "b"}, headers={"Idempotency-Key": "k2"}
        )
        assert reply.status_code == 409

    def test_failed_request_frees_the_key(self, api: TestClient) -> None:
        """A request that failed validation does not burn its Idempotency-Key."""
        bad = api.post(
            "/sms/send", json={"to": "1", "content": "a"}, headers={"Idempotency-Key": "k3"}
        )
        assert bad.status_code == 422
        good = api.post(
            "/sms/send", json={"to": TO, "content": "a"}, headers={"Idempotency-Key": "k3"}
        )
        assert good.status_code == 202


class TestHealth:
    def test_healthz_needs_no_key(self, services: Services) -> None:
        """/healthz answers without a key."""
        with TestClient(create_app(services=services)) as client:
            assert client.get("/healthz").json() == {"status": "ok"}


class TestBatchValidation:
    def test_unsafe_batch_dlr_url_is_one_422(self, api: TestClient) -> None:
        """A batch-wide dlr-url pointing inside the network refuses the batch, naming the field."""
        reply = api.post(
            "/sms/batch",
            json={"content": "x", "recipients": [TO], "dlr": True, "dlr-url": "http://10.0.0.1/r"},
        )
        assert reply.status_code == 422
        assert reply.json()["error"]["field"] == "dlr-url"


class TestCarrierReceiptNames:
    def test_a_configured_carrier_name_is_accepted(self, tmp_path: Path) -> None:
        """Receipts for a carrier named in SMSQ_CARRIERS_FILE are taken, unknown names are 404."""
        carriers = tmp_path / "carriers.toml"
        carriers.write_text(
            '[carriers.kannel-eu]\ntype = "kannel"\nurl = "http://kannel.test:13013"\n'
            '[[routes]]\ncarriers = ["kannel-eu"]\n'
        )
        client = fakeredis.FakeRedis(decode_responses=True)
        services = Services(
            settings=Settings(carriers_file=str(carriers), secret_key="k"),
            redis=client,
            store=Store(client),
            keys=KeyStore(client),
            publisher=CeleryPublisher(Celery("test", broker="memory://"), client),
            idempotency=Idempotency(client),
        )
        key = receipt_key("k")
        assert key is not None
        query = f"ref=m:1&token={segment_token(key, 'm:1')}&id=m.1&type=1"
        with TestClient(create_app(services=services)) as api:
            assert api.post(f"/carriers/kannel-eu/dlr?{query}").status_code == 200
            assert api.post(f"/carriers/kannel-us/dlr?{query}").status_code == 404
