"""The `/otp/*` API on fakeredis: send, verify, status, supersession, limits, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, cast

import fakeredis
import orjson
import pytest
from celery import Celery
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.otp import OtpDesk
from producer.services import Services
from tests.unit.fake_services import fake_services
from worker.otp.content import CODE_FIELD, code_keys
from worker.queueing import CeleryPublisher
from worker.settings import Settings

TO = "+14155552671"
SECRET = "unit-test-server-key-0123456789abcdef"
T0 = 1_800_000_000_000


class RecordingPublisher(CeleryPublisher):
    """Records what would be published instead of talking to a broker."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        super().__init__(Celery("unit", broker="memory://"), client)
        self.jobs: list[tuple[str, list[Any], str]] = []

    def publish(self, task: str, args: Sequence[Any], queue: str) -> None:
        self.jobs.append((task, list(args), queue))

    def publish_many(self, jobs: Sequence[tuple[str, Sequence[Any], str]]) -> None:
        for task, args, queue in jobs:
            self.publish(task, args, queue)


class Clock:
    """A settable clock in UTC milliseconds."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def make_services(**settings: Any) -> Services:
    return fake_services(
        Settings(**{"secret_key": SECRET, **settings}), publisher=RecordingPublisher
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    return {}


@pytest.fixture
def services(settings_changes: dict[str, Any]) -> Services:
    return make_services(**settings_changes)


def client_for(services: Services, clock: Clock) -> TestClient:
    app = create_app(services=services)
    app.state.otp_desk = OtpDesk(
        services.settings, services.redis, services.store, services.publisher, clock=clock
    )
    key = services.keys.create("unit").api_key
    return TestClient(app, headers={"authorization": f"Bearer {key}"})


@pytest.fixture
def api(services: Services, clock: Clock) -> Iterator[TestClient]:
    with client_for(services, clock) as client:
        yield client


def send(api: TestClient, **body: Any) -> Any:
    return api.post("/otp/send", json={"to": TO, **body})


def verify(api: TestClient, **body: Any) -> dict[str, Any]:
    reply = api.post("/otp/verify", json=body)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def code_of(services: Services, message_id: str) -> str:
    """The code, as only the worker can see it: unsealed from the stored message."""
    sealed = services.store.fields(message_id)[CODE_FIELD]
    return code_keys(services.settings).unseal(sealed, message_id)


def everything_in(client: fakeredis.FakeRedis) -> str:
    """Every key and value in Redis, as one string to search."""
    parts: list[str] = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = client.smembers(key)
        else:
            value = client.get(key)
        parts.append(f"{key}={value}")
    return "\n".join(parts)


class TestSend:
    def test_accepts_with_id_and_expiry(self, api: TestClient) -> None:
        """202 with the challenge id, the number, its expiry and `pending`; no code."""
        reply = send(api, ttl=120)
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert set(body) == {"id", "to", "expires_at", "status", "message_id"}
        assert (body["to"], body["status"]) == (TO, "pending")
        assert body["expires_at"] == "2027-01-15T08:02:00.000Z"

    def test_sms_goes_on_the_otp_lane_with_the_ttl_as_validity(
        self, api: TestClient, services: Services
    ) -> None:
        """The message is an OTP message on the otp queue, valid for the code's lifetime."""
        body = send(api, ttl=120).json()
        fields = services.store.fields(body["message_id"])
        assert (fields["priority"], fields["otp"], fields["status"]) == ("otp", "1", "queued")
        assert int(fields["validity_until"]) == T0 + 120_000
        publisher = services.publisher
        assert isinstance(publisher, RecordingPublisher)
        assert publisher.jobs == [("sms.send", [body["message_id"]], "otp")]

    def test_code_is_nowhere_in_redis_in_clear(self, api: TestClient, services: Services) -> None:
        """The store holds the template and a sealed code; the code itself appears nowhere."""
        body = send(api, length=10, template="Code {code} for Acme").json()
        code = code_of(services, body["message_id"])
        assert len(code) == 10
        assert services.store.fields(body["message_id"])["content"] == "Code {code} for Acme"
        assert code not in everything_in(services.redis)  # type: ignore[arg-type]

    def test_custom_template_length_and_sender(self, api: TestClient, services: Services) -> None:
        """Template, length and sender are honoured; segments count the real code length."""
        body = send(api, template="{code} is your Acme code", length=8, **{"from": "Acme"}).json()
        fields = services.store.fields(body["message_id"])
        assert (fields["from"], fields["characters"], fields["segments"]) == ("Acme", "26", "1")
        assert len(code_of(services, body["message_id"])) == 8

    def test_receipts_when_a_dlr_url_is_given(self, api: TestClient, services: Services) -> None:
        """`dlr-url` asks for receipts (level 2 by default) with the client's reference."""
        body = send(api, client_ref="login-42", **{"dlr-url": "https://example.com/r"}).json()
        fields = services.store.fields(body["message_id"])
        assert (fields["dlr"], fields["dlr_level"], fields["dlr_url"]) == (
            "1",
            "2",
            "https://example.com/r",
        )
        assert fields["client_ref"] == "login-42"

    def test_status_of_the_sms_hides_the_text(self, api: TestClient) -> None:
        """GET /sms/{id} of the OTP message shows the text masked."""
        body = send(api).json()
        shown = api.get(f"/sms/{body['message_id']}").json()
        assert shown["content"] == "<otp code hidden>"

    def test_scheduled_resend_goes_into_the_durable_schedule(
        self, api: TestClient, services: Services
    ) -> None:
        """`resend_after` schedules one `otp.resend` job for the challenge, on the otp lane."""
        body = send(api, resend_after=45).json()
        schedule = services.redis.zrange("smsq:schedule", 0, -1, withscores=True)
        ((member, score),) = cast(list[tuple[str, float]], schedule)
        job = orjson.loads(member.partition("|")[2])
        assert job == {"task": "otp.resend", "args": [body["id"]], "queue": "otp"}
        assert score == T0 + 45_000


class TestSendRefusals:
    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"template": "Hello"}, "template", "missing_placeholder"),
            ({"length": 3}, "length", "greater_than_equal"),
            ({"length": 11}, "length", "less_than_equal"),
            ({"ttl": 601}, "ttl", "less_than_equal"),
            ({"purpose": "a b"}, "purpose", "string_pattern_mismatch"),
            ({"resend_after": 300}, "resend_after", "invalid"),
            ({"to": "+19005551234"}, "to", "number_type_refused"),
            ({"to": "+4918012345"}, "to", "number_type_refused"),
            ({"to": "+44770090012"}, "to", "invalid_number"),
            ({"dlr-url": "http://127.0.0.1/x"}, "dlr-url", "unsafe_url"),
            ({"from": "far too long a sender"}, "from", "invalid_sender"),
            ({"code": "1"}, "code", "extra_forbidden"),
        ],
    )
    def test_invalid_requests_are_422_naming_the_field(
        self, api: TestClient, body: dict[str, Any], field: str, code: str
    ) -> None:
        """Every bad input is a 422 with the JSON error shape and the offending field."""
        reply = send(api, **body)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["field"] == field
        assert reply.json()["error"]["code"] == code

    @pytest.mark.parametrize("settings_changes", [{"otp_allowed_countries": ["DE"]}])
    def test_countries_outside_the_allow_list_are_refused(self, api: TestClient) -> None:
        """Only allowed regions get codes."""
        assert send(api).json()["error"]["code"] == "country_not_allowed"
        assert send(api, to="+4915112345678").status_code == 202

    def test_no_server_key_is_503(self, clock: Clock) -> None:
        """Without SMSQ_SECRET_KEY, OTP endpoints refuse with 503 instead of using no key."""
        with client_for(make_services(secret_key=""), clock) as api:
            reply = send(api)
            assert reply.status_code == 503
            assert reply.json()["error"]["code"] == "otp_unavailable"
            assert "SMSQ_SECRET_KEY" in reply.json()["error"]["message"]
            check = api.post("/otp/verify", json={"id": "0" * 32, "code": "123456"})
            assert check.status_code == 503

    def test_no_key_is_401(self, api: TestClient) -> None:
        """OTP endpoints need an API key."""
        reply = api.post("/otp/send", json={"to": TO}, headers={"authorization": ""})
        assert reply.status_code == 401

    def test_malformed_json_is_400(self, api: TestClient) -> None:
        """A broken body is a 400 with line and column."""
        reply = api.post(
            "/otp/send", content=b'{"to": ', headers={"content-type": "application/json"}
        )
        assert reply.status_code == 400
        assert "line 1" in reply.json()["error"]["message"]


class TestVerify:
    def test_right_code_is_approved_once(self, api: TestClient, services: Services) -> None:
        """The code from the SMS is valid once; replaying it is not found."""
        body = send(api).json()
        code = code_of(services, body["message_id"])
        assert verify(api, id=body["id"], code=code) == {
            "valid": True,
            "status": "approved",
            "attempts_remaining": 4,
        }
        assert verify(api, id=body["id"], code=code)["status"] == "not_found"

    def test_by_number_and_purpose(self, api: TestClient, services: Services) -> None:
        """A code can be checked by number and purpose instead of id."""
        body = send(api, purpose="login").json()
        code = code_of(services, body["message_id"])
        assert verify(api, to=TO, purpose="signup", code=code)["status"] == "not_found"
        assert verify(api, to="14155552671", purpose="login", code=code)["valid"] is True

    def test_wrong_codes_count_down_to_lockout(self, api: TestClient, services: Services) -> None:
        """Five wrong checks lock the code; the right one is refused afterwards."""
        body = send(api).json()
        code = code_of(services, body["message_id"])
        wrong = "0" * 6 if code != "0" * 6 else "1" * 6
        answers = [verify(api, id=body["id"], code=wrong) for _ in range(5)]
        assert [a["attempts_remaining"] for a in answers] == [4, 3, 2, 1, 0]
        assert [a["status"] for a in answers] == ["pending"] * 4 + ["max_attempts"]
        assert verify(api, id=body["id"], code=code) == {
            "valid": False,
            "status": "max_attempts",
            "attempts_remaining": 0,
        }

    def test_expired_code_is_refused(
        self, api: TestClient, services: Services, clock: Clock
    ) -> None:
        """After its ttl the right code is expired."""
        body = send(api, ttl=60).json()
        code = code_of(services, body["message_id"])
        clock.advance(60)
        assert verify(api, id=body["id"], code=code)["status"] == "expired"
        assert api.get(f"/otp/{body['id']}").json()["status"] == "expired"

    def test_another_keys_code_is_not_found(self, api: TestClient, services: Services) -> None:
        """A key cannot check (nor see) another key's codes."""
        body = send(api).json()
        code = code_of(services, body["message_id"])
        other = services.keys.create("other").api_key
        reply = api.post(
            "/otp/verify",
            json={"id": body["id"], "code": code},
            headers={"authorization": f"Bearer {other}"},
        )
        assert reply.json()["status"] == "not_found"
        hidden = api.get(f"/otp/{body['id']}", headers={"authorization": f"Bearer {other}"})
        assert hidden.status_code == 404

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"code": "123456"}, "id"),
            ({"id": "0" * 32, "to": TO, "code": "123456"}, "id"),
            ({"id": "0" * 32, "code": "12a456"}, "code"),
            ({"id": "../../x", "code": "123456"}, "id"),
        ],
    )
    def test_invalid_checks_are_422(
        self, api: TestClient, body: dict[str, Any], field: str
    ) -> None:
        """Neither or both of id and to, or a code that is not digits: 422."""
        reply = api.post("/otp/verify", json=body)
        assert reply.status_code == 422
        assert reply.json()["error"]["field"] == field

    def test_approval_cancels_a_still_queued_sms(self, api: TestClient, services: Services) -> None:
        """Once approved, an SMS of the code that has not left yet is not sent."""
        body = send(api).json()
        verify(api, id=body["id"], code=code_of(services, body["message_id"]))
        assert services.store.fields(body["message_id"])["status"] == "cancelled"


class TestResendAndCooldown:
    def test_resend_within_the_cooldown_is_429(self, api: TestClient, clock: Clock) -> None:
        """A second code for the same number and purpose within 30 s: 429 with Retry-After."""
        assert send(api).status_code == 202
        clock.advance(10)
        reply = send(api)
        assert reply.status_code == 429
        assert reply.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(reply.headers["retry-after"]) <= 30
        assert send(api, purpose="other").status_code == 202

    @pytest.mark.parametrize("settings_changes", [{"otp_cooldown_seconds": 0}])
    def test_resend_supersedes_and_cancels_the_queued_sms(
        self, api: TestClient, services: Services
    ) -> None:
        """A new code replaces the old: the old SMS is cancelled, the old code is expired."""
        first = send(api).json()
        old_code = code_of(services, first["message_id"])
        second = send(api).json()
        assert services.store.fields(first["message_id"])["status"] == "cancelled"
        assert api.get(f"/otp/{first['id']}").json()["status"] == "superseded"
        assert verify(api, id=first["id"], code=old_code)["status"] == "expired"
        new_code = code_of(services, second["message_id"])
        assert verify(api, to=TO, code=new_code)["valid"] is True


class TestLimits:
    @pytest.mark.parametrize(
        ("settings_changes", "numbers", "reason"),
        [
            ({"otp_limit_number": 2}, [TO, TO, TO], "this number"),
            ({"otp_limit_prefix": 2}, ["+14155552671", "+14155552672", "+14155552673"], "range"),
            ({"otp_limit_key": 2}, ["+14155552671", "+4915112345678", "+447911123456"], "API key"),
            ({"otp_limit_country": 2}, ["+14155552671", "+12125551234", "+13105551234"], "country"),
        ],
        ids=["number", "prefix", "key", "country"],
    )
    def test_third_send_over_a_limit_is_429(
        self, services: Services, clock: Clock, numbers: list[str], reason: str
    ) -> None:
        """Each limit answers 429 with Retry-After (until the first send leaves the window)."""
        settings = services.settings.model_copy(update={"otp_cooldown_seconds": 0})
        with client_for(dataclasses.replace(services, settings=settings), clock) as api:
            for number in numbers[:2]:
                assert send(api, to=number).status_code == 202
                clock.advance(10)
            reply = send(api, to=numbers[2])
            assert reply.status_code == 429, reply.text
            assert reason in reply.json()["error"]["message"]
            window = 3600 if reason in ("this number", "range") else 60
            assert int(reply.headers["retry-after"]) == window - 20


class TestStatus:
    def test_follows_the_sms_then_the_verification(
        self, api: TestClient, services: Services
    ) -> None:
        """GET /otp/{id} says queued, sent, delivered, then approved; never the code."""
        body = send(api).json()
        code = code_of(services, body["message_id"])
        seen = [api.get(f"/otp/{body['id']}").json()["status"]]
        for state in ("submitting", "delivered"):
            services.store.set_fields(body["message_id"], {"status": state})
            seen.append(api.get(f"/otp/{body['id']}").json()["status"])
        verify(api, id=body["id"], code=code)
        shown = api.get(f"/otp/{body['id']}").json()
        seen.append(shown["status"])
        assert seen == ["queued", "sent", "delivered", "approved"]
        assert shown["message_status"] == "delivered"
        assert shown["approved_at"] == shown["created_at"]
        assert code not in orjson.dumps(shown).decode()

    def test_unknown_id_is_404(self, api: TestClient) -> None:
        """An id nobody issued is a JSON 404."""
        reply = api.get(f"/otp/{'0' * 32}")
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"
